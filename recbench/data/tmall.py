"""Tmall (IJCAI-15 "Repeat Buyers") multi-behaviour log -> per-(user, item) action episodes with
cart / purchase / favourite outcome, delay (days) and ordered-sequence labels, and the user's history.

Format and preprocessing rules: datasets/tmall/raw/README.md

Code map (TmallAdapter.build, in order):
  read + validate  read_log (compact streaming read) / read_log_checked (the exact bad line), read_user_info
  episodes         _episodes -> _block_episodes, _block_columns (min_user_episodes); distinct_rows (dedupe count)
  split            _split (chronological, whole start days)
  features         _index_ids -> vocabulary_index (training vocabularies), _profile (age, gender)
  labels           _labels -> _label_block (horizon and split censoring, the target action sequence)
  arrays           _arrays: ep_<user|item|cat|seller|brand|age|gender>, ep_group, ep_start, ep_first_day,
                   ep_hist_end, ep_user_start; <split>_rows, <split>_label_action / _label_time / _label_seq /
                   _label_seq_time; _spec -> meta["spec"]
  assemble         assemble + _history: a batch (target, user, the history window, labels; only `keys` if given)
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recbench.data import schema
from recbench.data.base import DatasetAdapter, Prepared, take
from recbench.data.readers import (
    WHOLE_ROWS,
    first_bad,
    has_rows,
    read_table,
    require_non_negative,
    require_non_null,
    sniff_header,
)
from recbench.data.tmall_replica import TmallReplicaConfig, write_tmall_replica
from recbench.errors import UserInputError, bad_input

LOG_FILE = "user_log_format1.csv"
INFO_FILE = "user_info_format1.csv"
ID_COLUMNS = ("user_id", "item_id", "cat_id", "seller_id")
LOG_COLUMNS = (*ID_COLUMNS, "brand_id", "time_stamp", "action_type")
HISTORY_ACTIONS = ("click", "cart", "purchase", "favourite")  # action_type 0..3
TARGET_ACTIONS = ("cart", "purchase", "favourite")              # action_type 1..3
NEVER = 1 << 30  # "first day" of an action that did not happen
PAD, EXIT = 0, 1  # sequence tokens; target action k is token k + 2
EPISODE_BLOCK_ROWS = 8_000_000  # log rows per aggregation block (bounds the hash state's memory)
ITEM_FIELDS = ("item", "cat", "seller", "brand")


class TmallAdapter(DatasetAdapter):
    produces = (schema.ACTIONS,)  # the batch contracts it follows (recbench/data/schema.py)
    smoke_replica = {"n_users": 150, "n_items": 1500, "episodes_per_user": 15.0}  # the smallest replica a one-step smoke run uses

    name = "tmall"
    # 3: row arrays `<split>_rows` (were `_ep`); 4: logs running over New Year and user_info codes outside
    # their range are rejected (a cache built from such files before is not reused)
    version = "4"
    required_files = (LOG_FILE,)
    optional_files = (INFO_FILE,)

    def __init__(self, source: str, raw_dir: str, cache_dir: str, replica_dir: str,
                 history_length: int, min_user_episodes: int, min_count: int, dedupe: bool,
                 valid_fraction: float, test_fraction: float, label_horizon_days: int,
                 replica: dict[str, Any], use_cache: bool = True) -> None:
        super().__init__(source, raw_dir, cache_dir, replica_dir, use_cache)
        self.history_length = history_length
        self.min_user_episodes = min_user_episodes
        self.min_count = min_count
        self.dedupe = dedupe
        self.valid_fraction = valid_fraction
        self.test_fraction = test_fraction
        self.label_horizon_days = label_horizon_days
        self.replica = TmallReplicaConfig(**replica)

    def preprocess_config(self) -> dict[str, Any]:
        keys = ("history_length", "min_user_episodes", "min_count", "dedupe", "valid_fraction",
                "test_fraction", "label_horizon_days")
        return {key: getattr(self, key) for key in keys}

    def replica_config(self) -> dict[str, Any]:
        return self.replica.to_dict()

    def write_replica(self, out_dir: Path) -> None:
        write_tmall_replica(out_dir, self.replica)

    # ------------------------------------------------------------------ build
    # The build works on whole columns (polars, then numpy): one hash aggregation of the log into
    # episodes, one sort of the episodes, then run-length / lookup-table / counting operations.
    # No step sorts or joins the 55M-row log itself, and the log is freed once its episodes exist.
    def build(self, raw_dir: Path) -> Prepared:
        path = raw_dir / LOG_FILE
        log = read_log(path)
        n_rows = log.height
        info = read_user_info(raw_dir / INFO_FILE) if (raw_dir / INFO_FILE).is_file() else None
        ep, distinct = self._episodes(log, info)
        # dedupe drops later exact copies of a row: it changes no episode (the first row of an
        # episode and the first row of each action are never a later copy), only this count
        if self.dedupe:
            rows_after_dedupe = distinct if distinct is not None else distinct_rows(log)
        else:
            rows_after_dedupe = n_rows
        del log
        if len(ep["user_id"]) == 0:
            raise bad_input(path, f"no user has {self.min_user_episodes} or more item "
                            "episodes", "lower data.min_user_episodes or use a larger log")
        split, cut = self._split(ep["start_day"], path)
        self._index_ids(ep, split)
        spec, users, items = self._spec(ep), int(ep["group"][-1]), ep.pop("items")
        arrays = self._arrays(ep, split, cut)
        meta = {"spec": spec, "splits": {s: int((split == i).sum())
                                                    for i, s in enumerate(("train", "valid", "test"))},
                "stats": {"rows": n_rows, "rows_after_dedupe": rows_after_dedupe, "episodes": len(split),
                          "users": users, "items": items,
                          "split_start_days": {"valid": cut[0], "test": cut[1]},
                          "positive_rate": {a: float(arrays["test_label_action"][:, k].mean())
                                            for k, a in enumerate(TARGET_ACTIONS)}}}
        return Prepared(arrays=arrays, meta=meta)

    def _episodes(self, log: pl.DataFrame, info: pl.DataFrame | None) -> tuple[dict[str, Any], int | None]:
        """One entry per (user, item), sorted by (user, start day, start position): start day, last
        day, first day of each action type and file position of each target action, the first row's
        cat / seller / brand, age and gender; users with fewer than `min_user_episodes` episodes
        dropped. Also the number of distinct log rows when it comes for free (else None)."""
        shift = max(1, log.height.bit_length())  # a row's (day, file position) as one int64: day << shift | pos
        absent = 1 << 62  # "no row with this action" (larger than any stamp)
        bits = _column_bits(log, ("user_id", "item_id", "cat_id", "seller_id", "brand_id"))
        day_ok = log.select((pl.col("day").min() >= 0) & (pl.col("day").max() < 512)).item()
        # the (user, item) key and the first row's (cat, seller, brand) packed into one int64 each
        # when the ids allow it (one hash key, one min_by, one sort key); column by column otherwise
        pack_key = bool(bits) and bits["user_id"] + bits["item_id"] <= 62
        pack_side = bool(bits) and bits["cat_id"] + bits["seller_id"] + bits["brand_id"] <= 62
        int64 = lambda c: pl.col(c).cast(pl.Int64)  # noqa: E731
        day, action = pl.col("day"), pl.col("action_type")
        stamp = int64("day") * (1 << shift) + int64("pos")
        aggs = [pl.col("stamp").min().alias("start"), day.max().cast(pl.Int32).alias("last_day"),
                pl.when(action == 0).then(day.cast(pl.Int32)).otherwise(NEVER).min().alias("day_0"),
                *[pl.when(action == a).then(pl.col("stamp")).otherwise(absent).min().alias(f"stamp_{a}")
                  for a in (1, 2, 3)]]
        extra = {"stamp": stamp}
        if pack_side:
            extra["side"] = ((int64("cat_id") * (1 << bits["seller_id"]) + int64("seller_id")) * (1 << bits["brand_id"])
                             + int64("brand_id").fill_null(-1) + 1)
            aggs += [pl.col("side").min_by("stamp"), (pl.col("side").min() == pl.col("side").max()).alias("same")]
            if day_ok:  # distinct (day, action) per episode: with a constant side, the distinct rows
                extra["day_action"] = day.cast(pl.Int32) * 4 + action.cast(pl.Int32)
                aggs.append(pl.col("day_action").n_unique().alias("distinct"))
        else:
            aggs += [pl.col(c).min_by("stamp") for c in ("cat_id", "seller_id", "brand_id")]
        keys = [(int64("user_id") * (1 << bits["item_id"]) + int64("item_id")).alias("key")] if pack_key \
            else ["user_id", "item_id"]
        rows = log.lazy().with_row_index("pos").with_columns(**extra)
        # users in contiguous id ranges of ~EPISODE_BLOCK_ROWS log rows, one aggregation each: the
        # hash state stays small, and the blocks' outputs, each sorted, concatenate in (user, start) order
        blocks = max(1, -(-log.height // EPISODE_BLOCK_ROWS)) if pack_key else 1
        low_user, high_user = log.select(pl.col("user_id").min(), pl.col("user_id").max().alias("h")).row(0)
        # integer arithmetic (user ids < 2**62 here): float bounds lose ids above 2**53, and the last bound
        # could fall below the largest user, whose rows would silently be left out
        bounds = np.unique(np.array([low_user + (high_user + 1 - low_user) * k // blocks for k in range(blocks + 1)],
                                    dtype=np.int64)) if blocks > 1 else None
        parts: dict[str, list[np.ndarray]] = {}
        distinct, constant = 0, True
        for begin, end in zip(bounds[:-1], bounds[1:]) if blocks > 1 else [(None, None)]:
            block = rows if begin is None else rows.filter(pl.col("user_id").is_between(begin, end, closed="left"))
            frame = self._block_episodes(block.group_by(keys).agg(aggs), bits, pack_key, pack_side, day_ok, shift)
            if frame.height == 0:
                continue
            if pack_side and day_ok:
                constant = constant and bool(frame["same"].all())
                distinct += int(frame["distinct"].sum())
            for name, values in self._block_columns(frame).items():
                parts.setdefault(name, []).append(values)
            del frame
        ep: dict[str, Any] = {}
        for name in list(parts):
            chunks = parts.pop(name)
            ep[name] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            del chunks
        ep["age"], ep["gender_idx"] = _profile(ep["user_id"], info)
        return ep, (distinct if pack_side and day_ok and constant else None)

    @staticmethod
    def _block_episodes(grouped: pl.LazyFrame, bits: dict[str, int], pack_key: bool, pack_side: bool, day_ok: bool,
                        shift: int) -> pl.DataFrame:
        """A block's aggregated episodes, unpacked and sorted by (user, start)."""
        absent, scale = 1 << 62, 1 << shift
        if pack_key:
            item_bits = bits["item_id"]
            grouped = grouped.with_columns(user_id=pl.col("key") // (1 << item_bits),
                                           item_id=pl.col("key") % (1 << item_bits))
        if pack_key and day_ok and bits["user_id"] + 9 + shift <= 62:  # start < 512 << shift
            grouped = grouped.sort(pl.col("user_id") * (1 << (9 + shift)) + pl.col("start"))
        else:
            grouped = grouped.sort("user_id", "start")
        if pack_side:
            brand_bits, seller_bits = bits["brand_id"], bits["seller_id"]
            brand = pl.col("side") % (1 << brand_bits)
            grouped = grouped.with_columns(cat_id=pl.col("side") // (1 << (seller_bits + brand_bits)),
                                           seller_id=(pl.col("side") // (1 << brand_bits)) % (1 << seller_bits),
                                           brand_id=brand - 1, brand_valid=brand > 0)
        else:
            grouped = grouped.with_columns(brand_valid=pl.col("brand_id").is_not_null(),
                                           brand_id=pl.col("brand_id").fill_null(0))
        missing = {a: pl.col(f"stamp_{a}") == absent for a in (1, 2, 3)}
        return grouped.with_columns(
            start_day=(pl.col("start") // scale).cast(pl.Int32),
            **{f"day_{a}": pl.when(missing[a]).then(NEVER).otherwise(pl.col(f"stamp_{a}") // scale).cast(pl.Int32)
               for a in (1, 2, 3)},
            **{f"pos_{a}": pl.when(missing[a]).then(0).otherwise(pl.col(f"stamp_{a}") % scale).cast(pl.Int64)
               for a in (1, 2, 3)}).collect(engine="streaming")

    def _block_columns(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Numpy columns of a block's sorted episodes, users with too few episodes dropped."""
        user = frame["user_id"].to_numpy()
        counts = np.diff(np.append(_run_starts(user), len(user)))
        if (counts < self.min_user_episodes).any():
            frame = frame.filter(pl.Series(np.repeat(counts >= self.min_user_episodes, counts)))
        ep = {c: frame[c].to_numpy() for c in ("user_id", "item_id", "cat_id", "seller_id", "brand_id",
                                               "brand_valid", "start_day", "last_day")}
        ep["first_day"] = np.stack([frame[c].to_numpy() for c in ("day_0", "day_1", "day_2", "day_3")], 1)
        ep["first_pos"] = np.stack([frame[c].to_numpy() for c in ("pos_1", "pos_2", "pos_3")], 1)
        return ep

    def _split(self, start_day: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """Chronological split on whole days; returns split codes (0 train, 1 valid, 2 test) and the
        first day of validation and of test."""
        n = len(start_day)
        n_test, n_valid = round(n * self.test_fraction), round(n * self.valid_fraction)  # whole episodes
        low = int(start_day.min())
        cumulative = np.cumsum(np.bincount(start_day - low))  # counting sort: value at sorted position i
        at = lambda i: int(np.searchsorted(cumulative, i, side="right")) + low  # noqa: E731
        test_start = at(min(n - 1, n - n_test))
        valid_start = at(min(n - 1, max(0, n - n_test - n_valid)))
        if not low < valid_start < test_start:
            distinct = int((np.diff(np.r_[0, cumulative]) > 0).sum())
            raise bad_input(path, f"the log spans too few days ({distinct}) to cut a "
                            "train / validation / test split by day", "use a log covering more days "
                            "or change data.valid_fraction / data.test_fraction")
        split = np.where(start_day >= test_start, 2, np.where(start_day >= valid_start, 1, 0)).astype(np.int8)
        return split, (valid_start, test_start)

    def _index_ids(self, ep: dict[str, Any], split: np.ndarray) -> None:
        """Dense indices from the training split; 0 padding, 1 unseen/rare."""
        raw_columns = {"user": "user_id", "item": "item_id", "cat": "cat_id", "seller": "seller_id",
                       "brand": "brand_id"}
        train = split == 0
        everywhere = np.ones(len(split), dtype=bool)
        for field, column in raw_columns.items():
            valid = ep.pop("brand_valid") if column == "brand_id" else everywhere
            values = ep[column] if column == "user_id" else ep.pop(column)  # raw users: runs, groups
            ep[field] = vocabulary_index(values, valid, train, self.min_count)
            if column == "item_id":
                ep["items"] = int(pl.Series(values).n_unique())
        # a dense key per raw user (not vocabulary-limited) groups GAUC exactly (users are sorted)
        user = ep["user_id"]
        new = np.ones(len(user), dtype=bool)
        new[1:] = user[1:] != user[:-1]
        ep["group"] = np.cumsum(new, dtype=np.int64)

    def _spec(self, ep: dict[str, Any]) -> dict[str, Any]:
        cards = {f: int(ep[f].max()) + 1 for f in ("user", *ITEM_FIELDS)}
        cards.update(age=9, gender=4)
        return {"cardinalities": cards, "user_fields": ["user", "age", "gender"],
                "item_fields": list(ITEM_FIELDS), "history_length": self.history_length,
                "history_actions": list(HISTORY_ACTIONS), "target_actions": list(TARGET_ACTIONS),
                "sequence_length": len(TARGET_ACTIONS) + 1, "time_unit": "days",
                "max_time": float(self.label_horizon_days)}

    def _arrays(self, ep: dict[str, Any], split: np.ndarray, cut: tuple[int, int]) -> dict[str, np.ndarray]:
        user, start_day = ep.pop("user_id"), ep["start_day"]
        arrays = {f"ep_{f}": np.asarray(ep.pop(f), dtype=np.int32) for f in ("user", *ITEM_FIELDS, "age")}
        arrays.update(ep_gender=np.asarray(ep.pop("gender_idx"), dtype=np.int32), ep_group=ep.pop("group"),
                      ep_start=start_day, ep_first_day=ep["first_day"],
                      ep_hist_end=_run_start_of_each(user, start_day),
                      ep_user_start=_run_start_of_each(user))
        del user
        ends = (cut[0], cut[1], NEVER)
        for s, name in enumerate(("train", "valid", "test")):
            rows = np.flatnonzero(split == s)
            arrays[f"{name}_rows"] = rows.astype(np.int64)
            arrays.update({f"{name}_{k}": v for k, v in self._labels(ep, rows, ends[s]).items()})
        return arrays

    def _labels(self, ep: dict[str, Any], rows: np.ndarray, split_end: int,
                chunk: int = 1 << 21) -> dict[str, np.ndarray]:
        """Per-action outcome/delay and the ordered target sequence, censored at the split end
        (computed in blocks of rows to bound the temporary memory)."""
        k, steps = len(TARGET_ACTIONS), len(TARGET_ACTIONS) + 1
        out = {"label_action": np.empty((len(rows), k), np.float32), "label_time": np.empty((len(rows), k), np.float32),
               "label_seq": np.empty((len(rows), steps), np.int64),
               "label_seq_time": np.empty((len(rows), steps), np.float32)}
        for begin in range(0, len(rows), chunk):
            part = rows[begin:begin + chunk]
            block = self._label_block(ep["start_day"][part], ep["last_day"][part], ep["first_day"][part],
                                      ep["first_pos"][part], split_end)
            for key, value in block.items():
                out[key][begin:begin + len(part)] = value
        return out

    def _label_block(self, start_day: np.ndarray, last_day: np.ndarray, first_day: np.ndarray,
                     first_pos: np.ndarray, split_end: int) -> dict[str, np.ndarray]:
        start = start_day[:, None]
        limit = np.minimum(start[:, 0] + self.label_horizon_days, split_end - 1)
        day, pos = first_day[:, 1:], first_pos  # target actions = action types 1..3
        happened = day <= limit[:, None]
        delay = np.where(happened, day - start, 0).astype(np.float32)
        # order the happened actions by (day, file position); absent ones sort last
        key = np.where(happened, day.astype(np.int64) * (1 << 40) + pos, np.iinfo(np.int64).max)
        order = _stable_argsort3(key)
        n_happened = happened.sum(1)
        steps = np.arange(len(TARGET_ACTIONS) + 1)[None, :]
        tokens = np.full((len(start), steps.shape[1]), PAD, np.int64)
        times = np.zeros(tokens.shape, np.float32)
        is_action = steps[:, :-1] < n_happened[:, None]
        tokens[:, :-1] = np.where(is_action, order + 2, PAD)
        times[:, :-1] = np.where(is_action, np.take_along_axis(delay, order, 1), 0)
        exit_time = np.clip(np.minimum(last_day, limit) - start[:, 0], 0, None)
        exit_time = np.maximum(exit_time, delay.max(1))
        tokens[np.arange(len(start)), n_happened] = EXIT
        times[np.arange(len(start)), n_happened] = exit_time
        return {"label_action": happened.astype(np.float32), "label_time": delay,
                "label_seq": tokens, "label_seq_time": times}

    # ------------------------------------------------------------------ batches
    def assemble(self, tables: dict[str, torch.Tensor], split: str, rows: torch.Tensor,
                 keys: frozenset[str] | None = None) -> dict[str, torch.Tensor]:
        """Gather a batch: target + user fields, the history window, labels (all vectorised); with
        `keys`, only those (a CTR model reads neither the action history nor the sequence labels)."""
        t = tables
        wanted = (lambda key: True) if keys is None else keys.__contains__  # noqa: E731
        ep = take(t[f"{split}_rows"], rows)
        batch = {f: take(t[f"ep_{f}"], ep).long() for f in ("user", "age", "gender", *ITEM_FIELDS) if wanted(f)}
        if wanted("group"):
            batch["group"] = take(t["ep_group"], ep)
        if keys is None or any(key.startswith("hist_") for key in keys):
            batch.update(self._history(t, ep, wanted))
        for key in ("label_action", "label_time", "label_seq", "label_seq_time"):
            if wanted(key):
                batch[key] = take(t[f"{split}_{key}"], rows)
        return batch

    def _history(self, t: dict[str, torch.Tensor], ep: torch.Tensor, wanted) -> dict[str, torch.Tensor]:
        """The last `history_length` earlier-day episodes of each episode's user (oldest first)."""
        length = self.history_length
        end, first = take(t["ep_hist_end"], ep), take(t["ep_user_start"], ep)
        hist = end[:, None] - length + torch.arange(length)[None, :]  # oldest .. most recent
        mask = hist >= first[:, None]
        hist = torch.where(mask, hist, torch.zeros_like(hist))
        out = {f"hist_{f}": torch.where(mask, take(t[f"ep_{f}"], hist).long(), 0)
               for f in ITEM_FIELDS if wanted(f"hist_{f}")}
        out["hist_mask"] = mask
        if wanted("hist_action_mask") or wanted("hist_action_time") or wanted("hist_recency"):
            target_start = take(t["ep_start"], ep)[:, None]
            hist_start = take(t["ep_start"], hist)
            first_day = take(t["ep_first_day"], hist)
            acted = (first_day < target_start[:, :, None]) & mask[:, :, None]
            out["hist_action_mask"] = acted
            out["hist_action_time"] = torch.where(acted, (first_day - hist_start[:, :, None]).float(), 0.0)
            out["hist_recency"] = torch.where(mask, (target_start - hist_start).float(), 0.0)
        return out


# ---------------------------------------------------------------------- reading + validation
def read_log(path: Path) -> pl.DataFrame:
    """Read and validate user_log_format1.csv: id columns, brand_id (nullable), action_type and
    `day` (days since 2014-01-01); a row's file position is its index in the returned frame.

    First a compact streaming read (32-bit ids, time_stamp as a category: ~26 bytes a row); a file
    it cannot take as is (an id beyond 32 bits, or any invalid value) is read again by
    `read_log_checked`, which gives the same frame with 64-bit ids or the one-line error."""
    frame = _read_log_compact(path)
    frame = frame if frame is not None else read_log_checked(path)
    require_one_year(path, frame)
    return frame


MAX_HOLE_DAYS = 182  # half a year: a wider hole between the log's dates means they run over New Year


def require_one_year(path: Path, frame: pl.DataFrame) -> None:
    """Stop when the dates look like they run over New Year (e.g. 1201..1231 then 0101..0131).

    time_stamp is MMDD without a year (the real log: 0511..1112 of 2014) and every date is read in
    2014. A log whose dates, read so, leave a hole of more than half a year between two consecutive
    dates is shorter read across New Year, with the dates before the hole in the next year. Which
    rows those are cannot be told: the file is not in time order (datasets.md), so its order says
    nothing about the year. Reading them in 2014 would put January before December silently; so the
    build stops with one line instead of guessing. (A year with small holes, up to half a year, is read
    in 2014 as before.) Vectorised: one unique over the day column (a few hundred values)."""
    days = np.sort(frame["day"].unique().to_numpy())
    if len(days) < 2:
        return
    gaps = np.diff(days)
    widest = int(gaps.argmax())
    if gaps[widest] <= MAX_HOLE_DAYS:
        return
    before, after = int(days[widest]), int(days[widest + 1])  # the hole: (before, after)
    mmdd = lambda day: (date(2014, 1, 1) + timedelta(days=int(day))).strftime("%m%d")  # noqa: E731
    line, day = first_bad(frame, pl.col("day") <= before, "day")
    raise bad_input(path, f"line {line} has time_stamp {mmdd(day)}: read in 2014 the log's dates leave a "
                    f"{after - before}-day hole ({mmdd(before)} to {mmdd(after)}), so they look like {mmdd(after)}.."
                    f"{mmdd(days[-1])} then {mmdd(days[0])}..{mmdd(before)} of the next year, and neither MMDD nor "
                    "the row order (not by time) tells which rows are which year",
                    "keep one year's rows (the real log covers 0511..1112 of 2014), or split the log at New Year "
                    "and use one part", "time_stamp")


def _stamp_days(stamps: pl.DataFrame) -> pl.DataFrame:
    """Per distinct `time_stamp` string: `bad` (not a 2014 MMDD date) and its `day`."""
    stamp = pl.col("time_stamp").str.strip_chars()
    date = ("2014" + stamp.str.zfill(4)).str.to_date("%Y%m%d", strict=False)
    return stamps.with_columns(bad=stamp.is_null() | ~stamp.str.contains(r"^\d{3,4}$") | date.is_null(),
                               day=(date - pl.date(2014, 1, 1)).dt.total_days().cast(pl.Int32))


def _read_log_compact(path: Path) -> pl.DataFrame | None:
    """The validated log in ~26 bytes a row, or None when the checked reader must look at it."""
    try:
        header, separator = sniff_header(path)
        if any(c not in header for c in LOG_COLUMNS) or not has_rows(path):
            return None
    except UserInputError:
        return None
    typed = {c: pl.Int64 for c in ID_COLUMNS} | {"brand_id": pl.Float64, "action_type": pl.Int64,
                                                 "time_stamp": pl.Categorical}
    brand, action = pl.col("brand_id"), pl.col("action_type")
    bad = (action.is_null() | ~action.is_between(0, 3) | (brand.is_not_null() & (brand != brand.round(0)))
           | (brand < 0) | pl.any_horizontal([pl.col(c) < 0 for c in ID_COLUMNS]))  # negative ids: checked path
    query = (pl.scan_csv(path, has_header=False, skip_rows=1, new_columns=header, separator=separator,
                         infer_schema=False, schema_overrides=typed)
             .select(LOG_COLUMNS)
             .with_columns(*[pl.col(c).cast(pl.Int32) for c in ID_COLUMNS], bad=bad,  # strict casts:
                           brand_id=brand.cast(pl.Int32),                             # overflow -> None
                           action_type=action.cast(pl.Int8, strict=False)))
    try:  # every field parsed: a row with extra fields then fails here and the checked reader names it
        frame = query.collect(engine="streaming", optimizations=WHOLE_ROWS)
    except pl.exceptions.PolarsError:
        return None
    if frame["bad"].any() or any(frame[c].null_count() for c in ID_COLUMNS):
        return None
    stamps = _stamp_days(frame.select(pl.col("time_stamp").unique().cast(pl.String)))
    if stamps["bad"].any():
        return None
    day = pl.col("time_stamp").replace_strict(stamps["time_stamp"], stamps["day"].cast(pl.Int16),
                                              return_dtype=pl.Int16)
    return frame.with_columns(day=day).drop("time_stamp", "bad")


def read_log_checked(path: Path) -> pl.DataFrame:
    """`read_log` with every check done row by row: the exact line of the first bad value."""
    dtypes = {c: pl.Int64 for c in ID_COLUMNS} | {"brand_id": pl.Float64, "action_type": pl.Int64}
    frame = read_table(path, LOG_COLUMNS, dtypes)
    require_non_null(path, frame, ID_COLUMNS)
    require_non_negative(path, frame, (*ID_COLUMNS, "brand_id"))
    actions = pl.col("action_type")
    bad_action = actions.is_null() | ~actions.is_between(0, 3)
    if frame.select(bad_action.any()).item():
        line, raw = first_bad(frame, bad_action, "action_type")
        raise bad_input(path, f"line {line} has action_type '{raw}', outside 0..3 (0 click, 1 cart, "
                        "2 purchase, 3 favourite)", "fix or drop that row", "action_type")
    brand = pl.col("brand_id")
    # NaN and inf compare equal to their rounding, and 1e300 rounds to itself: name them before the cast
    bad_brand = brand.is_not_null() & (brand.is_nan() | brand.is_infinite() | (brand != brand.round(0))
                                       | (brand >= 2**31))
    if frame.select(bad_brand.any()).item():
        line, raw = first_bad(frame, bad_brand, "brand_id")
        raise bad_input(path, f"line {line} has brand_id '{raw}', not a whole number in 0..2147483647",
                        "fix or drop that row", "brand_id")
    # a log has a few hundred distinct stamps: parse and check those, then map every row
    stamps = _stamp_days(frame.select(pl.col("time_stamp").unique()))
    if stamps["bad"].any():
        stamp = pl.col("time_stamp").str.strip_chars()
        date = ("2014" + stamp.str.zfill(4)).str.to_date("%Y%m%d", strict=False)
        bad_stamp = stamp.is_null() | ~stamp.str.contains(r"^\d{3,4}$") | date.is_null()
        line, raw = first_bad(frame, bad_stamp, "time_stamp")
        raise bad_input(path, f"line {line} has time_stamp '{raw}', not a 2014 date written MMDD "
                        "(e.g. 0829 or 829)", "fix or drop that row", "time_stamp")
    return frame.with_columns(brand_id=brand.cast(pl.Int64),
                              day=pl.col("time_stamp").replace_strict(stamps["time_stamp"], stamps["day"],
                                                                      return_dtype=pl.Int32),
                              action_type=actions.cast(pl.Int8)).drop("time_stamp")


def _column_bits(frame: pl.DataFrame, columns: tuple[str, ...]) -> dict[str, int]:
    """Bits each non-negative id column needs (a nullable one gets one more: null packs as 0);
    {} when some id is negative."""
    stats = frame.select(*[pl.col(c).min().alias(f"{c}:min") for c in columns],
                         *[pl.col(c).max().alias(f"{c}:max") for c in columns]).row(0, named=True)
    if any(stats[f"{c}:min"] is not None and stats[f"{c}:min"] < 0 for c in columns):
        return {}
    return {c: max(1, int(stats[f"{c}:max"] or 0).bit_length() + int(frame[c].null_count() > 0 or c == "brand_id"))
            for c in columns}


def distinct_rows(log: pl.DataFrame) -> int:
    """Rows left after dropping exact duplicates (same user, item, cat, seller, brand, day, action;
    a missing brand equals a missing brand): the number of distinct packed 128-bit row keys when
    the ids fit (one hash of one column), else polars' multi-column unique."""
    columns = ("user_id", "item_id", "cat_id", "seller_id", "brand_id")
    bits = _column_bits(log, columns)
    day_ok = log.select((pl.col("day").min() >= 0) & (pl.col("day").max() < 512)).item()
    if not bits or not day_ok or sum(bits.values()) + 9 + 2 > 126:
        return log.unique(subset=list(LOG_COLUMNS[:-2]) + ["day", "action_type"], keep="any").height
    key = pl.lit(0, dtype=pl.Int128)
    for column in columns:
        value = pl.col(column).fill_null(-1) + 1 if column == "brand_id" else pl.col(column)
        key = key * (1 << bits[column]) + value.cast(pl.Int128)
    key = (key * 512 + pl.col("day").cast(pl.Int128)) * 4 + pl.col("action_type").cast(pl.Int128)
    return int(log.select(key.n_unique()).item())


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values begins."""
    new = np.ones(len(values), dtype=bool)
    new[1:] = values[1:] != values[:-1]
    return np.flatnonzero(new)


def _run_start_of_each(*columns: np.ndarray) -> np.ndarray:
    """For every position, the index of the first position of its run of equal (column, ...) tuples."""
    new = np.zeros(len(columns[0]), dtype=bool)
    new[:1] = True
    for values in columns:
        new[1:] |= values[1:] != values[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(len(new)), 0)).astype(np.int64)


def _profile(user_ids: np.ndarray, info: pl.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Age (age_range 0..8, 0 unknown or missing) and gender index (female 1, male 2, unknown 3)."""
    n = len(user_ids)
    if info is None:
        return np.zeros(n, np.int64), np.full(n, 3, np.int64)
    ids = info["user_id"].to_numpy()
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    at = np.minimum(np.searchsorted(ids, user_ids), len(ids) - 1)
    found = ids[at] == user_ids
    columns = []
    for column, unknown, high in (("age_range", 0, 8), ("gender", 2, 2)):
        values = info[column]
        known = ~values.is_null().to_numpy()[order][at] & found
        columns.append(np.where(known, np.clip(values.fill_null(0).to_numpy()[order][at], 0, high), unknown))
    return columns[0].astype(np.int64), (columns[1] + 1).astype(np.int64)


def vocabulary_index(values: np.ndarray, valid: np.ndarray, train: np.ndarray, min_count: int) -> np.ndarray:
    """Index of each id in the sorted vocabulary of training ids seen >= min_count times, from 2;
    1 for every other id and for missing ones (`valid` false)."""
    seen = values[train & valid]
    if seen.size == 0:
        return np.ones(len(values), np.int32)
    if values[valid].min() >= 0 and values[valid].max() < (1 << 24):  # a lookup table over raw ids
        counts = np.bincount(seen, minlength=int(values[valid].max()) + 1)
        member = (counts > 0) & (counts >= min_count)
        table = np.where(member, np.cumsum(member) + 1, 1).astype(np.int32)
        return np.where(valid, table[np.where(valid, values, 0)], 1).astype(np.int32)
    ids, counts = np.unique(seen, return_counts=True)
    vocab = ids[counts >= min_count]
    if vocab.size == 0:
        return np.ones(len(values), np.int32)
    at = np.minimum(np.searchsorted(vocab, values), len(vocab) - 1)
    return np.where(valid & (vocab[at] == values), at + 2, 1).astype(np.int32)


def _stable_argsort3(key: np.ndarray) -> np.ndarray:
    """`np.argsort(key, axis=1, kind="stable")` for [N, 3] keys, without N tiny sorts."""
    k0, k1, k2 = key[:, 0], key[:, 1], key[:, 2]
    ranks = ((k1 < k0).astype(np.int64) + (k2 < k0), (k0 <= k1).astype(np.int64) + (k2 < k1),
             (k0 <= k2).astype(np.int64) + (k1 <= k2))
    order = np.empty(key.shape, dtype=np.intp)
    rows = np.arange(len(key))
    for column, rank in enumerate(ranks):
        order[rows, rank] = column
    return order


def read_user_info(path: Path) -> pl.DataFrame:
    """Read user_info_format1.csv (user_id, age_range, gender; the last two may be empty)."""
    dtypes = {"user_id": pl.Int64, "age_range": pl.Float64, "gender": pl.Float64}
    frame = read_table(path, ("user_id", "age_range", "gender"), dtypes)
    require_non_null(path, frame, ("user_id",))
    require_non_negative(path, frame, ("user_id",))
    for column, high, meaning in (("age_range", 8, "0 unknown, 1..8 age bands"),
                                  ("gender", 2, "0 female, 1 male, 2 unknown")):
        value = pl.col(column)  # empty = unknown; NaN, inf, 2.5 or 9 are not codes (and NaN would not cast)
        bad = value.is_not_null() & (value.is_nan() | (value != value.round(0)) | ~value.is_between(0, high))
        if frame.select(bad.any()).item():
            line, raw = first_bad(frame, bad, column)
            raise bad_input(path, f"line {line} has {column} '{raw}', not a code in 0..{high} ({meaning})",
                            "fix that value or leave it empty (unknown)", column)
    return (frame.unique("user_id", keep="first", maintain_order=True)
            .with_columns(pl.col("age_range", "gender").cast(pl.Int64)))
