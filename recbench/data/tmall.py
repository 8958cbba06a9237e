"""Tmall (IJCAI-15 "Repeat Buyers") multi-behaviour log -> per-(user, item) action episodes.

Files (datasets/tmall/README.md says where to get them):
  user_log_format1.csv   user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type   (required)
  user_info_format1.csv  user_id,age_range,gender                                          (optional)
Accepted variants: a leading unnamed index column, brand_id written as a float or left empty,
time_stamp as MMDD with or without the leading zero ("0829" or "829"; the year is 2014).
action_type: 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite.

Preprocessing (each step is a config key, all part of the cache fingerprint):
 1. Stable order: rows sorted by (user, day, file position): the file is not in time order and
    days carry no time of day, so file position is the only within-day order there is.
 2. `dedupe`: exact duplicate rows (same user, item, ..., day, action) are dropped.
 3. Episode = all of one user's rows on one item. Its start is its first row in that order; the
    first day (and file position) of each action type is kept.
 4. `min_user_episodes`: users with fewer episodes are dropped (they have no history).
 5. Chronological split on the episode start day: the last `test_fraction` of episodes (whole days)
    is test, the `valid_fraction` before it validation, the rest train.
 6. Labels of an episode, for cart / purchase / favourite: whether the action happens within
    `label_horizon_days` of the start and before the end of the episode's split (so no label of a
    training episode is read from validation days), and its delay in days. The target action
    sequence is those actions ordered by first occurrence, then `exit` (its time = the last
    event's delay).
 7. History = the user's last `history_length` episodes that started on strictly earlier days,
    each with 4 action slots (click, cart, purchase, favourite): an action fills its slot only if
    it happened on a day before the target's start (no peeking at the future of past items).
 8. Id vocabularies are built on the training split (`min_count` occurrences); index 0 is padding,
    index 1 is "unseen or rare".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recbench.data.base import DatasetAdapter, Prepared
from recbench.data.readers import first_bad, read_table, require_non_null
from recbench.data.tmall_replica import TmallReplicaConfig, write_tmall_replica
from recbench.errors import bad_input

LOG_FILE = "user_log_format1.csv"
INFO_FILE = "user_info_format1.csv"
ID_COLUMNS = ("user_id", "item_id", "cat_id", "seller_id")
LOG_COLUMNS = (*ID_COLUMNS, "brand_id", "time_stamp", "action_type")
HISTORY_ACTIONS = ("click", "cart", "purchase", "favourite")  # action_type 0..3
TARGET_ACTIONS = ("cart", "purchase", "favourite")              # action_type 1..3
NEVER = 1 << 30  # "first day" of an action that did not happen
PAD, EXIT = 0, 1  # sequence tokens; target action k is token k + 2
ITEM_FIELDS = ("item", "cat", "seller", "brand")


class TmallAdapter(DatasetAdapter):
    name = "tmall"
    version = "2"
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
    def build(self, raw_dir: Path) -> Prepared:
        log = read_log(raw_dir / LOG_FILE)
        n_rows = log.height
        if self.dedupe:
            log = log.unique(subset=list(LOG_COLUMNS[:-2]) + ["day", "action_type"], keep="first",
                             maintain_order=True)
        info = read_user_info(raw_dir / INFO_FILE) if (raw_dir / INFO_FILE).is_file() else None
        episodes = self._episodes(log, info)
        if episodes.height == 0:
            raise bad_input(raw_dir / LOG_FILE, f"no user has {self.min_user_episodes} or more item "
                            "episodes", "lower data.min_user_episodes or use a larger log")
        episodes, cut = self._split(episodes, raw_dir / LOG_FILE)
        episodes = self._index_ids(episodes)
        arrays = self._arrays(episodes, cut)
        meta = {"spec": self._spec(episodes), "splits": {s: int((episodes["split"] == i).sum())
                                                          for i, s in enumerate(("train", "valid", "test"))},
                "stats": {"rows": n_rows, "rows_after_dedupe": log.height, "episodes": episodes.height,
                          "users": int(episodes["user_id"].n_unique()),
                          "items": int(episodes["item_id"].n_unique()),
                          "split_start_days": {"valid": cut[0], "test": cut[1]},
                          "positive_rate": {a: float(arrays["test_label_action"][:, k].mean())
                                            for k, a in enumerate(TARGET_ACTIONS)}}}
        return Prepared(arrays=arrays, meta=meta)

    def _episodes(self, log: pl.DataFrame, info: pl.DataFrame | None) -> pl.DataFrame:
        """One row per (user, item): start, per-action first day/position, side features."""
        first_of = [agg for a in range(4) for agg in (
            pl.col("day").filter(pl.col("action_type") == a).first().alias(f"day_{a}"),
            pl.col("pos").filter(pl.col("action_type") == a).first().alias(f"pos_{a}"))]
        episodes = (log.sort("user_id", "item_id", "day", "pos")
                    .group_by("user_id", "item_id", maintain_order=True)
                    .agg(pl.col("day").first().alias("start_day"), pl.col("pos").first().alias("start_pos"),
                         pl.col("day").max().alias("last_day"), pl.col("cat_id").first(),
                         pl.col("seller_id").first(), pl.col("brand_id").first(), *first_of)
                    .sort("user_id", "start_day", "start_pos"))
        counts = pl.col("item_id").count().over("user_id")
        episodes = episodes.filter(counts >= self.min_user_episodes)
        if info is not None:
            episodes = episodes.join(info, on="user_id", how="left")
        else:
            episodes = episodes.with_columns(age_range=pl.lit(None, pl.Int64), gender=pl.lit(None, pl.Int64))
        # age_range 0 / missing = unknown -> 0; gender 0 female, 1 male, 2 / missing unknown -> 1..3
        return episodes.with_columns(age=pl.col("age_range").fill_null(0).clip(0, 8),
                                     gender_idx=(pl.col("gender").fill_null(2).clip(0, 2) + 1))

    def _split(self, episodes: pl.DataFrame, path: Path) -> tuple[pl.DataFrame, tuple[int, int]]:
        """Chronological split on whole days; returns the first day of validation and of test."""
        days = np.sort(episodes["start_day"].to_numpy())
        n = len(days)
        n_test, n_valid = round(n * self.test_fraction), round(n * self.valid_fraction)  # whole episodes
        test_start = int(days[min(n - 1, n - n_test)])
        valid_start = int(days[min(n - 1, max(0, n - n_test - n_valid))])
        if not days[0] < valid_start < test_start:
            raise bad_input(path, f"the log spans too few days ({len(np.unique(days))}) to cut a "
                            "train / validation / test split by day", "use a log covering more days "
                            "or change data.valid_fraction / data.test_fraction")
        split = (pl.when(pl.col("start_day") >= test_start).then(2)
                 .when(pl.col("start_day") >= valid_start).then(1).otherwise(0))
        return episodes.with_columns(split=split.cast(pl.Int8)), (valid_start, test_start)

    def _index_ids(self, episodes: pl.DataFrame) -> pl.DataFrame:
        """Dense indices from the training split; 0 padding, 1 unseen/rare."""
        raw_columns = {"user": "user_id", "item": "item_id", "cat": "cat_id", "seller": "seller_id",
                       "brand": "brand_id"}
        train = episodes.filter(pl.col("split") == 0)
        for field, column in raw_columns.items():
            vocab = (train.group_by(column).len().filter(pl.col("len") >= self.min_count)
                     .drop_nulls(column).sort(column)
                     .with_columns(pl.int_range(2, pl.len() + 2, dtype=pl.Int32).alias(field))
                     .select(column, field))
            episodes = episodes.join(vocab, on=column, how="left", maintain_order="left")
            episodes = episodes.with_columns(pl.col(field).fill_null(1))
        # a dense key per raw user (not vocabulary-limited) groups GAUC exactly
        return episodes.with_columns(group=pl.col("user_id").rank("dense").cast(pl.Int64))

    def _spec(self, episodes: pl.DataFrame) -> dict[str, Any]:
        cards = {f: int(episodes[f].max()) + 1 for f in ("user", *ITEM_FIELDS)}
        cards.update(age=9, gender=4)
        return {"cardinalities": cards, "user_fields": ["user", "age", "gender"],
                "item_fields": list(ITEM_FIELDS), "history_length": self.history_length,
                "history_actions": list(HISTORY_ACTIONS), "target_actions": list(TARGET_ACTIONS),
                "sequence_length": len(TARGET_ACTIONS) + 1, "time_unit": "days",
                "max_time": float(self.label_horizon_days)}

    def _arrays(self, episodes: pl.DataFrame, cut: tuple[int, int]) -> dict[str, np.ndarray]:
        position = pl.int_range(pl.len(), dtype=pl.Int64)
        ordered = episodes.with_columns(ep=position).with_columns(
            hist_end=pl.col("ep").min().over("user_id", "start_day"),
            user_start=pl.col("ep").min().over("user_id"))
        col = lambda name, dtype=np.int32: ordered[name].to_numpy().astype(dtype)  # noqa: E731
        first_day = np.stack([ordered[f"day_{a}"].fill_null(NEVER).to_numpy() for a in range(4)], 1)
        first_pos = np.stack([ordered[f"pos_{a}"].fill_null(0).to_numpy() for a in range(4)], 1)
        arrays = {f"ep_{f}": col(f) for f in ("user", *ITEM_FIELDS, "age")}
        arrays.update(ep_gender=col("gender_idx"), ep_group=col("group", np.int64),
                      ep_start=col("start_day"), ep_first_day=first_day.astype(np.int32),
                      ep_hist_end=col("hist_end", np.int64), ep_user_start=col("user_start", np.int64))
        split = ordered["split"].to_numpy()
        ends = (cut[0], cut[1], NEVER)
        for s, name in enumerate(("train", "valid", "test")):
            rows = np.flatnonzero(split == s)
            arrays[f"{name}_ep"] = rows.astype(np.int64)
            arrays.update({f"{name}_{k}": v for k, v in self._labels(
                ordered, rows, first_day[rows], first_pos[rows], ends[s]).items()})
        return arrays

    def _labels(self, ordered: pl.DataFrame, rows: np.ndarray, first_day: np.ndarray,
                first_pos: np.ndarray, split_end: int) -> dict[str, np.ndarray]:
        """Per-action outcome/delay and the ordered target sequence, censored at the split end."""
        start = ordered["start_day"].to_numpy()[rows][:, None]
        last_day = ordered["last_day"].to_numpy()[rows]
        limit = np.minimum(start[:, 0] + self.label_horizon_days, split_end - 1)
        day, pos = first_day[:, 1:], first_pos[:, 1:]  # target actions = action types 1..3
        happened = day <= limit[:, None]
        delay = np.where(happened, day - start, 0).astype(np.float32)
        # order the happened actions by (day, file position); absent ones sort last
        key = np.where(happened, day.astype(np.int64) * (1 << 40) + pos, np.iinfo(np.int64).max)
        order = np.argsort(key, axis=1, kind="stable")
        n_happened = happened.sum(1)
        steps = np.arange(len(TARGET_ACTIONS) + 1)[None, :]
        tokens = np.full((len(rows), steps.shape[1]), PAD, np.int64)
        times = np.zeros(tokens.shape, np.float32)
        is_action = steps[:, :-1] < n_happened[:, None]
        tokens[:, :-1] = np.where(is_action, order + 2, PAD)
        times[:, :-1] = np.where(is_action, np.take_along_axis(delay, order, 1), 0)
        exit_time = np.clip(np.minimum(last_day, limit) - start[:, 0], 0, None)
        exit_time = np.maximum(exit_time, delay.max(1))
        tokens[np.arange(len(rows)), n_happened] = EXIT
        times[np.arange(len(rows)), n_happened] = exit_time
        return {"label_action": happened.astype(np.float32), "label_time": delay,
                "label_seq": tokens, "label_seq_time": times}

    # ------------------------------------------------------------------ batches
    def assemble(self, tables: dict[str, torch.Tensor], split: str,
                 rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather a batch: target + user fields, the history window, labels (all vectorised)."""
        t = tables
        ep = t[f"{split}_ep"][rows]
        batch = {f: t[f"ep_{f}"][ep].long() for f in ("user", "age", "gender", *ITEM_FIELDS)}
        batch["group"] = t["ep_group"][ep]
        length = self.history_length
        end, first = t["ep_hist_end"][ep], t["ep_user_start"][ep]
        hist = end[:, None] - length + torch.arange(length)[None, :]  # oldest .. most recent
        mask = hist >= first[:, None]
        hist = torch.where(mask, hist, torch.zeros_like(hist))
        for f in ITEM_FIELDS:
            batch[f"hist_{f}"] = torch.where(mask, t[f"ep_{f}"][hist].long(), 0)
        batch["hist_mask"] = mask
        target_start = t["ep_start"][ep][:, None]
        hist_start = t["ep_start"][hist]
        acted = (t["ep_first_day"][hist] < target_start[:, :, None]) & mask[:, :, None]
        batch["hist_action_mask"] = acted
        batch["hist_action_time"] = torch.where(
            acted, (t["ep_first_day"][hist] - hist_start[:, :, None]).float(), 0.0)
        batch["hist_recency"] = torch.where(mask, (target_start - hist_start).float(), 0.0)
        for key in ("label_action", "label_time", "label_seq", "label_seq_time"):
            batch[key] = t[f"{split}_{key}"][rows]
        return batch


# ---------------------------------------------------------------------- reading + validation
def read_log(path: Path) -> pl.DataFrame:
    """Read and validate user_log_format1.csv; adds `day` (days since 2014-01-01) and `pos`."""
    dtypes = {c: pl.Int64 for c in ID_COLUMNS} | {"brand_id": pl.Float64, "action_type": pl.Int64}
    frame = read_table(path, LOG_COLUMNS, dtypes)
    require_non_null(path, frame, ID_COLUMNS)
    actions = pl.col("action_type")
    bad_action = actions.is_null() | ~actions.is_between(0, 3)
    if frame.select(bad_action.any()).item():
        line, raw = first_bad(frame, bad_action, "action_type")
        raise bad_input(path, f"line {line} has action_type '{raw}', outside 0..3 (0 click, 1 cart, "
                        "2 purchase, 3 favourite)", "fix or drop that row", "action_type")
    brand = pl.col("brand_id")
    bad_brand = brand.is_not_null() & (brand != brand.round(0))
    if frame.select(bad_brand.any()).item():
        line, raw = first_bad(frame, bad_brand, "brand_id")
        raise bad_input(path, f"line {line} has brand_id '{raw}', not a whole number",
                        "fix or drop that row", "brand_id")
    stamp = pl.col("time_stamp").str.strip_chars()
    date = ("2014" + stamp.str.zfill(4)).str.to_date("%Y%m%d", strict=False)
    bad_stamp = stamp.is_null() | ~stamp.str.contains(r"^\d{3,4}$") | date.is_null()
    if frame.select(bad_stamp.any()).item():
        line, raw = first_bad(frame, bad_stamp, "time_stamp")
        raise bad_input(path, f"line {line} has time_stamp '{raw}', not a 2014 date written MMDD "
                        "(e.g. 0829 or 829)", "fix or drop that row", "time_stamp")
    day = (date - pl.date(2014, 1, 1)).dt.total_days().cast(pl.Int32)
    return frame.with_columns(brand_id=brand.cast(pl.Int64), day=day,
                              action_type=actions.cast(pl.Int8),
                              pos=pl.int_range(pl.len(), dtype=pl.Int64)).drop("time_stamp")


def read_user_info(path: Path) -> pl.DataFrame:
    """Read user_info_format1.csv (user_id, age_range, gender; the last two may be empty)."""
    dtypes = {"user_id": pl.Int64, "age_range": pl.Float64, "gender": pl.Float64}
    frame = read_table(path, ("user_id", "age_range", "gender"), dtypes)
    require_non_null(path, frame, ("user_id",))
    return (frame.unique("user_id", keep="first", maintain_order=True)
            .with_columns(pl.col("age_range", "gender").cast(pl.Int64)))
