"""KuaiLive (Kuaishou live streaming, 2025-05-05..25) -> live exposures with five task labels (click, long_view,
comment, like, gift), a Moment (30-s) or window (5-min / 1-h) training stream and Moment&Cross's five sequences.

Format and preprocessing rules: datasets/kuailive/raw/README.md

Rows and views. Every row of every set points to a VIEW: (exposure, the time its features are read at).
Valid, test and progressive rows (the training days' exposures, for progressive validation) are read at
their exposure, with every label known by their split's end. Training rows are read at their EMIT time,
when the stream reports them, so a row carries what the system knew then: the room's real-time counters,
its age, the hour, its current content (segments) and the user's sequences as of then.

What the paper (arXiv 2408.05709, section 2.3) leaves open, decided here:
  - tick alignment: reports flush on a grid of `moment_seconds` on the Unix epoch (every user's rows
    together, as a log stream flushed every tick); a label known at time T is reported in the first tick
    strictly after T, so the report time is always later than the event it reports;
  - when a label is known: click at the exposure, long view when the watch passes `long_view_seconds`,
    comment / like / gift at their first event; the remaining tasks' negatives at the exit (the end of
    the watch; an unclicked exposure exits at once). First-only: one report per task per exposure, the
    reports of one tick merged into one row;
  - how features refresh: all of them are re-read at the emit time, except that a row never sees its own
    visit (its user's events in that room from the exposure on: shows, clicks, comments, likes, gifts in
    the counters, the room in the live sequences), which are its labels;
  - the end of the training period: a report at or after the split end was not known during training
    and is dropped (its task is simply not trained for that exposure);
  - the window baseline reports at exposure + `fast_window_minutes` (every label seen by then) and at
    exposure + `slow_window_minutes` (later positives, PU loss), each read at its own report time.
The training rows are stored in emit-time order with their times (`train_time`), which time-ordered
training (recbench/data/streaming.py) and progressive validation (recbench/progressive.py) read.

Code map (KuaiLiveAdapter.build, in order; KuaiLiveM3Adapter reuses all but the reading):
  read + validate  read_all -> read_rooms, read_events, read_profiles, read_titles, read_photos (find_file: old
                   names; check_ms: Unix ms); check_streamers
  rooms, exposures merge_rooms, place (room windows); _exposures (clicks + negatives, local-date split)
  labels           _first_positive (each task's first positive, censored at the split end)
  features         short_videos, _index (training vocabularies: vocabulary, encode)
  rows, views      _rows_and_views -> _row_sets -> _moment, _window (emit times)
  view features    _features (hour, live age, count_in room counters less the own visit)
  sequences        _sequences -> last_before (per view); sequence_items reads a window in a batch;
                   _item_fields (each live history room's candidate fields)
  content          _content: segment (segment_text.csv, recbench/data/live_content.py: the latest segment
                   started before the read time's `segment_seconds` tick, per view and per live history
                   room; vectors from the text stage, loaded by attach -> _attach_text_content) or title
                   (_embeddings); streamer_longterm; text_corpus / text_tasks (LARM's stage 1)
  arrays           sample_<field>, sample_group, sample_time, sample_visit_room, sample_room (per exposure);
                   view_exposure, view_time, view_hour, view_live_age, view_room_<what>_<m>m, view_content,
                   view_seq_<name>_first / _end (per view); content_emb, room_longterm_emb (segment content:
                   built by attach from content_text, content_room, room_*, exposed_rooms),
                   item_<author|category|kind|time|visit_room|content|longterm>, item_field_<field>,
                   seq_<name>_order;
                   <progressive|valid|test>_rows / _label, train_<moment|window>_<rows|label|mask|pu>;
                   attach adds train_* (the chosen stream) and <split>_time; _spec -> meta["spec"]
  assemble         assemble: a batch (fields, label_ / mask_ / pu_<task>, content embeddings, seq_<name>_*;
                   hist_<name>_* with data.history_content=true)
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recbench.data import schema
from recbench.data.base import DatasetAdapter, Prepared, take
from recbench.data.kuailive_replica import (
    CLICK_FILE,
    COMMENT_FILE,
    GIFT_FILE,
    LIKE_FILE,
    NEGATIVE_FILE,
    PHOTO_FILE,
    PHOTO_TAG_FILE,
    ROOM_FILE,
    SEGMENT_TEXT_FILE,
    STREAMER_FILE,
    TITLE_FILE,
    USER_FILE,
    KuaiLiveReplicaConfig,
    write_kuailive_replica,
)
from recbench.data.readers import (
    first_bad,
    read_table,
    require_non_negative,
    require_non_negative_numbers,
    require_non_null,
    sniff_header,
    warn_duplicates,
)
from recbench.data.live_content import dense_rows, read_segment_texts, room_means, serve
from recbench.errors import UserInputError, bad_input

OLD_NAMES = {STREAMER_FILE: "author.csv", ROOM_FILE: "mapped_room.csv", TITLE_FILE: "title_embeddings_pca128.npy"}
ALIASES = {"author_id": "streamer_id"}
EVENT_COLUMNS = ("user_id", "live_id", "streamer_id", "timestamp")
EVENT_FILES = {"click": (CLICK_FILE, ("watch_live_time",)), "negative": (NEGATIVE_FILE, ()),
               "comment": (COMMENT_FILE, ()), "like": (LIKE_FILE, ()), "gift": (GIFT_FILE, ("gift_price",))}
TASKS = ("click", "long_view", "comment", "like", "gift")
CONTENT_MODES = ("auto", "segment", "title")  # segment: segment_text.csv through the text stage | title
SEQUENCES = ("short", "long", "aid", "livelong", "mixed")
HISTORY_CONTENT_SEQUENCES = ("livelong", "mixed")  # the live histories whose rooms' content a batch can carry
SHORT, LIVE = 1, 2  # sequence element kinds (0 = padding)
USER_PROFILE = {"age": "age", "gender": "gender", "device_brand": "device_brand", "device_price": "device_price",
                "fans_range": "fans_num", "follow_range": "follow_num", "watch_cnt_range": "accu_watch_live_cnt"}
STREAMER_PROFILE = {"streamer_gender": "gender", "streamer_age": "age", "streamer_fans": "fans_user_num",
                    "operation_tag": "live_operation_tag", "streamer_live_cnt": "accu_live_cnt"}
USER_FIELDS = ("user", *USER_PROFILE)
ITEM_FIELDS = ("live", "streamer", "live_type", "category", *STREAMER_PROFILE)
LIVE_AGE_EDGES = (1, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 360)  # minutes since the room started
COUNTER_BUCKETS = 9  # log2 buckets of a room counter: 0, 1, 2-3, 4-7, ..., >= 128
MS_FLOOR, MS_CEIL = 10**11, 10**14  # plausible Unix milliseconds (1973 .. 5138)
OPEN_END = 1 << 60  # end of a room that has not ended
MINUTE_MS, DAY_MS, LOCAL_OFFSET_MS = 60_000, 86_400_000, 8 * 3_600_000  # Asia/Shanghai is UTC+8, no DST


class KuaiLiveAdapter(DatasetAdapter):
    produces = (schema.LIVE,)  # the batch contracts it follows (recbench/data/schema.py)
    # the smallest replica a one-step smoke run uses
    smoke_replica = {"n_users": 150, "n_streamers": 120, "n_authors": 150, "live_exposures_per_user": 40.0}

    name = "kuailive"
    # 5: live_name_id < -1, negative short-video / segment ids, non-finite complete_play_cnt and p_date outside
    # 1973..5138 are rejected (a cache of such files is not reused); 4: content rows per segment + item content;
    # 3: rows index views read at their emit time (2: row arrays `<split>_rows`)
    version = "5"
    required_files = (CLICK_FILE, COMMENT_FILE, LIKE_FILE, GIFT_FILE, NEGATIVE_FILE, ROOM_FILE, USER_FILE,
                      STREAMER_FILE, TITLE_FILE)
    optional_files = (*OLD_NAMES.values(), PHOTO_FILE, PHOTO_TAG_FILE, SEGMENT_TEXT_FILE)

    def __init__(self, source: str, raw_dir: str, cache_dir: str, replica_dir: str, stream: str,
                 long_view_seconds: float, moment_seconds: float, fast_window_minutes: float,
                 slow_window_minutes: float, counter_minutes: list[int], sequence_lengths: dict[str, int],
                 unmatched_events: str, train_start: str, valid_start: str, test_start: str, test_end: str,
                 replica: dict[str, Any], use_cache: bool = True, content: str = "auto",
                 segment_seconds: float = 30.0, text_embeddings: str | None = None, text: Any = None,
                 text_dir: str | None = None, history_content: bool = False) -> None:
        super().__init__(source, raw_dir, cache_dir, replica_dir, use_cache, text_embeddings=text_embeddings,
                         text=text, text_dir=text_dir)
        self.history_content = bool(history_content)
        if content not in CONTENT_MODES:
            raise UserInputError(f"data.content='{content}' is not one of {', '.join(CONTENT_MODES)}. "
                                 "Fix: pass data.content=auto|segment|title")
        if segment_seconds <= 0:
            raise UserInputError(f"data.segment_seconds={segment_seconds} must be > 0. Fix: e.g. 30")
        self.content, self.segment_ms = content, round(segment_seconds * 1000)
        if stream not in ("moment", "window"):
            raise UserInputError(f"data.stream='{stream}' is not moment or window. Fix: pass data.stream=moment|window")
        if unmatched_events not in ("error", "drop"):
            raise UserInputError(f"data.unmatched_events='{unmatched_events}' is not error or drop. "
                                 "Fix: pass data.unmatched_events=error|drop")
        if set(sequence_lengths) != set(SEQUENCES) or min(sequence_lengths.values()) < 0:
            raise UserInputError(f"data.sequence_lengths must give a length >= 0 for each of {', '.join(SEQUENCES)}. "
                                 f"Fix: set data.sequence_lengths.<name> (got {dict(sequence_lengths)})")
        if not 0 < fast_window_minutes <= slow_window_minutes or moment_seconds <= 0:
            raise UserInputError("data.fast_window_minutes must be > 0 and <= data.slow_window_minutes, and "
                                 "data.moment_seconds > 0. Fix: e.g. 5, 60 and 30")
        self.stream = stream
        self.long_view_ms = round(long_view_seconds * 1000)
        self.moment_ms = round(moment_seconds * 1000)
        self.fast_ms, self.slow_ms = int(fast_window_minutes * MINUTE_MS), int(slow_window_minutes * MINUTE_MS)
        self.counter_minutes = tuple(int(m) for m in counter_minutes)
        self.sequence_lengths = {name: int(sequence_lengths[name]) for name in SEQUENCES}
        self.unmatched_events = unmatched_events
        self.dates = tuple(dt.date.fromisoformat(d) for d in (train_start, valid_start, test_start, test_end))
        if not self.dates[0] < self.dates[1] < self.dates[2] < self.dates[3]:
            raise UserInputError("data.train_start < valid_start < test_start < test_end must hold. "
                                 f"Fix: check the dates (got {', '.join(map(str, self.dates))})")
        self.replica = replica
        self.context_fields = ("hour", "live_age", *(f"room_{what}_{m}m" for m in self.counter_minutes
                                                     for what in ("shows", "clicks", "engage")))

    def preprocess_config(self) -> dict[str, Any]:
        return {"long_view_ms": self.long_view_ms, "moment_ms": self.moment_ms, "fast_ms": self.fast_ms,
                "slow_ms": self.slow_ms, "counter_minutes": list(self.counter_minutes),
                "sequence_lengths": self.sequence_lengths, "unmatched_events": self.unmatched_events,
                "dates": [d.isoformat() for d in self.dates], "content": self.content, "segment_ms": self.segment_ms}

    def replica_config(self) -> dict[str, Any]:
        return KuaiLiveReplicaConfig(**self.replica).to_dict()

    def write_replica(self, out_dir: Path) -> None:
        write_kuailive_replica(out_dir, KuaiLiveReplicaConfig(**self.replica))

    def missing_files(self, directory: Path) -> list[str]:
        """A required file also counts as present under its pre-2025-07-29 name."""
        return [name for name in self.required_files if find_file(directory, name) is None]

    # ------------------------------------------------------------------ build
    def build(self, raw_dir: Path) -> Prepared:
        tables = read_all(raw_dir)
        rooms = merge_rooms(tables["rooms"])
        events, dropped = {}, {}
        for kind, frame in tables["events"].items():
            path = find_file(raw_dir, EVENT_FILES[kind][0])
            check_streamers(frame, tables["streamers"], path)
            events[kind], dropped[kind] = place(frame, rooms, path, self.unmatched_events == "drop")
        exposures = self._exposures(events, rooms, raw_dir)
        first = self._first_positive(exposures, events)
        short = short_videos(tables.get("photos"), tables.get("photo_tags"))
        exposures, vocab = self._index(exposures, tables, short)
        arrays, views = self._rows_and_views(exposures, first)
        arrays.update(self._features(exposures, views, events))
        arrays.update(self._sequences(exposures, views, rooms, events["click"], short, vocab))
        arrays.update(self._item_fields(rooms, tables["streamers"], vocab, arrays))
        content, frames, mode = self._content(exposures, views, rooms, raw_dir, tables, arrays)
        arrays.update(content)
        arrays["item_longterm"] = longterm_rows(exposures, arrays)
        stats = self._stats(exposures, rooms, events, dropped, short, first, arrays)
        stats.update(content=mode, content_rows=len(arrays["content_room"]) - 1 if "content_room" in arrays else 0)
        dim = int(arrays["content_emb"].shape[1]) if "content_emb" in arrays else 0  # text content: set by attach
        meta = {"spec": self._spec(vocab, dim),
                "splits": {s: int((exposures["split"] == i).sum()) for i, s in enumerate(("train", "valid", "test"))},
                "stats": stats}
        # polars hands out read-only views; copy those so the tensors built on them are writable
        arrays = {k: v if v.flags.writeable else v.copy() for k, v in arrays.items()}
        return Prepared(arrays=arrays, meta=meta, frames=frames)

    @staticmethod
    def _item_fields(rooms: pl.DataFrame, streamers: pl.DataFrame, vocab: dict[str, pl.DataFrame],
                     arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`item_field_<f>` for every candidate field f of a live history item: its room as a candidate
        would have had it (0 for short videos), so that history rooms can go through a candidate tower."""
        profile = streamers.select("streamer_id", *(clean(pl.col(c)).alias(f) for f, c in STREAMER_PROFILE.items()))
        live = arrays["item_kind"] == LIVE
        used, slot = np.unique(np.where(live, arrays["item_visit_room"] - 1, 0), return_inverse=True)
        per_room = rooms[used].join(profile, on="streamer_id", how="left", maintain_order="left")  # rooms in use only
        columns = {"live": "live_id", "streamer": "streamer_id", "live_type": "live_type", "category": "category",
                   **{f: f for f in STREAMER_PROFILE}}
        return {f"item_field_{field}": np.where(live, encode(per_room[column], vocab[field]).to_numpy()[slot], 0)
                .astype(np.int32) for field, column in columns.items()}

    # ------------------------------------------------------------------ content
    def _content(self, exposures: pl.DataFrame, views: pl.DataFrame, rooms: pl.DataFrame, raw_dir: Path,
                 tables: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                                 dict[str, pl.DataFrame], str]:
        """What each view's room shows (`view_content`) and each live history item's room showed when the
        user clicked it (`item_content`), as rows of one content table, plus the streamer's long-term table.

        segment: the room's latest segment_text.csv segment started before the read time's tick
        (recbench/data/live_content.py); the vectors are the text stage's embeddings of the texts, loaded
        by `attach`. title: the room's title embedding (fixed per room)."""
        mode, path = self.content, raw_dir / SEGMENT_TEXT_FILE
        if mode == "auto":
            mode = "segment" if path.is_file() else "title"
        if mode == "segment" and not path.is_file():
            raise bad_input(path, "file not found (data.content=segment)",
                            f"put {SEGMENT_TEXT_FILE} there or pass data.content=title")
        live = arrays["item_kind"] == LIVE
        item_room, item_time = np.where(live, arrays["item_visit_room"] - 1, -1), arrays["item_time"]
        if mode == "title":
            out = self._embeddings(exposures, rooms, title_ids(tables["rooms"]), tables["titles"])
            out["view_content"] = out.pop("sample_content")[views["exposure"].to_numpy()]  # a room's title is fixed
            out["item_content"] = np.where(live, out.pop("room_content")[np.maximum(item_room, 0)], 0).astype(np.int32)
            return out, {}, mode
        segments = read_segment_texts(path, rooms)
        view_row = serve(segments, views["room"].to_numpy(), views["time"].to_numpy(), self.segment_ms)
        item_row = np.zeros(len(item_room), np.int64)
        item_row[live] = serve(segments, item_room[live], item_time[live], self.segment_ms)
        used, (view_content, item_content) = dense_rows([view_row, item_row])
        texts = segments["text"].gather(used - 1)
        distinct, text_id = np.unique(texts.to_numpy().astype(str), return_inverse=True)
        exposed = np.unique(exposures["room"].to_numpy())
        out = {"view_content": view_content, "item_content": item_content,
               "content_text": np.r_[0, text_id + 1].astype(np.int64),  # row 0: no content
               "content_room": np.r_[-1, segments["room"].to_numpy()[used - 1]].astype(np.int64),
               "room_streamer_code": rooms["streamer_code"].to_numpy(), "room_start": rooms["start"].to_numpy(),
               "exposed_rooms": exposed,
               "sample_room": (np.searchsorted(exposed, exposures["room"].to_numpy()) + 1).astype(np.int32)}
        frames = {"segment_text": pl.DataFrame({"text_id": np.arange(1, len(distinct) + 1), "text": distinct})}
        return out, frames, mode

    @staticmethod
    def _stats(exposures: pl.DataFrame, rooms: pl.DataFrame, events: dict[str, pl.DataFrame], dropped: dict[str, int],
               short: pl.DataFrame | None, first: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        split = exposures["split"].to_numpy()
        def rate(rows: np.ndarray) -> dict[str, float]:
            return {task: round(float((first[rows, k] >= 0).mean()), 5) for k, task in enumerate(TASKS)}

        return {"rooms": rooms.height, "exposures": exposures.height, "clicks": int(exposures["click"].sum()),
                "users": int(exposures["user_id"].n_unique()), "events": {k: v.height for k, v in events.items()},
                "dropped_outside_windows": dropped, "short_video_rows": 0 if short is None else short.height,
                "short_per_live": 0.0 if short is None else round(short.height / exposures.height, 3),
                "train_rows": {s: len(arrays[f"train_{s}_rows"]) for s in ("moment", "window")},
                "views": len(arrays["view_time"]),
                "emit_delay_seconds": {s: emit_delays(arrays, s) for s in ("moment", "window")},
                "positive_rate": {"train": rate(split == 0), "test": rate(split == 2)}}

    def _exposures(self, events: dict[str, pl.DataFrame], rooms: pl.DataFrame, raw_dir: Path) -> pl.DataFrame:
        """Clicks + negatives inside the configured dates, with split, room window and time of day."""
        clicks = events["click"].select("user_id", "room", "timestamp", pl.lit(1, pl.Int8).alias("click"),
                                        pl.col("watch_live_time").alias("watch"))
        negatives = events["negative"].select("user_id", "room", "timestamp", pl.lit(0, pl.Int8).alias("click"),
                                              pl.lit(0, pl.Int64).alias("watch"))
        day = (pl.col("timestamp") + LOCAL_OFFSET_MS) // DAY_MS
        edges = [(d - dt.date(1970, 1, 1)).days for d in self.dates]
        split = pl.when(day >= edges[2]).then(2).when(day >= edges[1]).then(1).otherwise(0).cast(pl.Int8)
        end_day = pl.when(day >= edges[2]).then(edges[3]).when(day >= edges[1]).then(edges[2]).otherwise(edges[1])
        exposures = (pl.concat([clicks, negatives])
                     .filter(day >= edges[0], day < edges[3])
                     .join(rooms.select("room", "live_id", "streamer_id", "start",
                                        pl.col("category").alias("category_name"),
                                        pl.col("live_type").alias("live_type_name")), on="room", how="left")
                     .with_columns(split=split, split_end=end_day.cast(pl.Int64) * DAY_MS - LOCAL_OFFSET_MS)
                     .sort("timestamp", "user_id", "room", "click", descending=[False, False, False, True])
                     .with_row_index("exposure"))
        for index, name in enumerate(("train", "valid", "test")):
            if not (exposures["split"] == index).any():
                raise bad_input(raw_dir / CLICK_FILE, f"no click or negative exposure falls in the {name} dates",
                                "check that timestamps are Unix milliseconds or change data.*_start / data.test_end")
        return exposures

    def _first_positive(self, exposures: pl.DataFrame, events: dict[str, pl.DataFrame]) -> np.ndarray:
        """[n, 5] ms from the exposure to each task's first positive (-1: none before the split end)."""
        n = exposures.height
        first = np.full((n, len(TASKS)), -1, np.int64)
        click = exposures["click"].to_numpy() == 1
        watch = exposures["watch"].to_numpy()
        first[click, 0] = 0
        first[click & (watch > self.long_view_ms), 1] = self.long_view_ms
        clicks = exposures.filter(pl.col("click") == 1).select("exposure", "user_id", "room", "timestamp",
                                                                pl.col("timestamp").alias("click_time"), "split_end")
        for k, kind in enumerate(("comment", "like", "gift"), start=2):
            # each event belongs to the user's latest click in that room at or before it
            matched = (events[kind].select("user_id", "room", "timestamp").sort("timestamp")
                       .join_asof(clicks.sort("timestamp"), on="timestamp", by=["user_id", "room"],
                                  strategy="backward", check_sortedness=False)
                       .filter(pl.col("exposure").is_not_null(), pl.col("timestamp") < pl.col("split_end"))
                       .group_by("exposure").agg((pl.col("timestamp") - pl.col("click_time")).min().alias("delay")))
            first[matched["exposure"].to_numpy(), k] = matched["delay"].to_numpy()
        end = exposures["split_end"].to_numpy() - exposures["timestamp"].to_numpy()
        first[first >= end[:, None]] = -1  # a positive after the split ends is not known in that split
        return first

    # ------------------------------------------------------------------ indices and features
    def _index(self, exposures: pl.DataFrame, tables: dict[str, Any],
               short: pl.DataFrame | None) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
        """Join the profiles, then map every categorical field to its training vocabulary index."""
        users = tables["users"].select("user_id", *(clean(pl.col(c)).alias(f) for f, c in USER_PROFILE.items()))
        streamers = tables["streamers"].select("streamer_id", *(clean(pl.col(c)).alias(f)
                                                                for f, c in STREAMER_PROFILE.items()))
        exposures = (exposures.join(users, on="user_id", how="left", maintain_order="left")
                     .join(streamers, on="streamer_id", how="left", maintain_order="left"))
        train = exposures.filter(pl.col("split") == 0)
        early = None if short is None else short.filter(pl.col("time") < train["split_end"].max())
        raw = {"user": "user_id", "live": "live_id", "live_type": "live_type_name", **{f: f for f in USER_PROFILE},
               **{f: f for f in STREAMER_PROFILE}}
        vocab = {field: vocabulary(train[column]) for field, column in raw.items()}
        # one id space for streamers and short-video authors, one category space for both domains
        authors = [] if early is None else [early["author_id"].alias("streamer_id")]
        categories = [] if early is None else [early["category"].alias("category_name")]
        vocab["streamer"] = vocabulary(pl.concat([train["streamer_id"], *authors]))
        vocab["category"] = vocabulary(pl.concat([train["category_name"], *categories]))
        columns = {**raw, "streamer": "streamer_id", "category": "category_name"}
        exposures = exposures.with_columns(encode(exposures[column], vocab[field]).alias(field)
                                           for field, column in columns.items())
        return exposures.with_columns(group=pl.col("user_id").rank("dense").cast(pl.Int64)), vocab

    def _features(self, exposures: pl.DataFrame, views: pl.DataFrame,
                  events: dict[str, pl.DataFrame]) -> dict[str, np.ndarray]:
        """Per exposure the categorical fields; per view the context read at the view's time: hour, room
        age and real-time room counters over the past windows. A view read after its exposure leaves out
        its own user's events in that room from the exposure on (the click, comments, ... are its labels)."""
        arrays = {f"sample_{f}": exposures[f].to_numpy().astype(np.int32) for f in (*USER_FIELDS, *ITEM_FIELDS)}
        arrays["sample_group"] = exposures["group"].to_numpy()
        arrays["sample_time"] = exposures["timestamp"].to_numpy()  # Unix ms of the exposure (not in the batches)
        arrays["sample_visit_room"] = exposures["room"].to_numpy() + 1  # matches item_visit_room (own-visit check)
        t, exposed = views["time"].to_numpy(), views["timestamp"].to_numpy()
        arrays["view_exposure"], arrays["view_time"] = views["exposure"].to_numpy().astype(np.int64), t
        arrays["view_hour"] = (((t + LOCAL_OFFSET_MS) // 3_600_000) % 24 + 2).astype(np.int32)
        minutes = (t - views["start"].to_numpy()) / MINUTE_MS
        arrays["view_live_age"] = (np.searchsorted(LIVE_AGE_EDGES, minutes, side="right") + 2).astype(np.int32)
        room, visit = views["room"].to_numpy(), visit_key(views["user_id"].to_numpy(), views["room"].to_numpy())
        shows = pl.concat([events[k].select("user_id", "room", "timestamp") for k in ("click", "negative")])
        sources = {"shows": shows, "clicks": events["click"].select("user_id", "room", "timestamp"),
                   "engage": pl.concat([events[k].select("user_id", "room", "timestamp")
                                        for k in ("comment", "like", "gift")])}
        for what, frame in sources.items():
            event_room, when = frame["room"].to_numpy(), frame["timestamp"].to_numpy()
            event_visit = visit_key(frame["user_id"].to_numpy(), event_room)
            for minutes in self.counter_minutes:
                lo = t - minutes * MINUTE_MS
                count = count_in(event_room, when, room, lo, t) - count_in(event_visit, when, visit,
                                                                          np.maximum(lo, exposed), t)
                bucket = np.minimum(np.floor(np.log2(count + 1.0)), COUNTER_BUCKETS - 1).astype(np.int32)
                arrays[f"view_room_{what}_{minutes}m"] = bucket + 2
        return arrays

    # ------------------------------------------------------------------ row sets, streams and views
    def _rows_and_views(self, exposures: pl.DataFrame, first: np.ndarray) -> tuple[dict[str, np.ndarray], pl.DataFrame]:
        """Every row set as indices into one table of views, a view being (exposure, the time its features
        are read at): progressive / valid / test rows at their exposure, the two training streams at their
        emit times. Returns the row arrays and the views (exposure columns + `exposure`, `time`)."""
        sets = self._row_sets(exposures, first)
        exposure = np.concatenate([rows for rows, *_ in sets.values()])
        time = np.concatenate([times for _, times, *_ in sets.values()])
        base = int(time.min()) - 1
        span = int(time.max()) - base + 1
        if exposures.height * span >= 1 << 62:
            raise RuntimeError("views: too many exposures x time span for one int64 key")
        unique, view = np.unique(exposure.astype(np.int64) * span + (time - base), return_inverse=True)
        arrays, at = {}, 0
        for name, (rows, _, label, mask, pu) in sets.items():
            arrays[f"{name}_rows"] = view[at:at + len(rows)].astype(np.int64)
            at += len(rows)
            for key, value in (("label", label), ("mask", mask), ("pu", pu)):
                if value is not None:
                    arrays[f"{name}_{key}"] = value
        columns = ("user_id", "room", "timestamp", "start", "category_name", "streamer_id")
        views = exposures.select(columns)[unique // span].with_columns(
            exposure=pl.Series(unique // span), time=pl.Series(unique % span + base))
        return arrays, views

    def _row_sets(self, exposures: pl.DataFrame, first: np.ndarray) -> dict[str, tuple]:
        """name -> (exposure, view time, label, mask, pu). progressive / valid / test: every exposure of
        the split once, read at its exposure, with every label known by the split end; train_moment /
        train_window: the training streams, read at their emit times."""
        split, t = exposures["split"].to_numpy(), exposures["timestamp"].to_numpy()
        positive = (first >= 0).astype(np.uint8)
        sets = {}
        for index, name in ((0, "progressive"), (1, "valid"), (2, "test")):
            rows = np.flatnonzero(split == index)
            sets[name] = (rows, t[rows], positive[rows], None, None)
        train = np.flatnonzero(split == 0)
        exit_ms = np.maximum(exposures["watch"].to_numpy()[train], first[train].max(1))
        end = exposures["split_end"].to_numpy()[train]
        sets["train_moment"] = self._moment(train, t[train], first[train], exit_ms, end)
        sets["train_window"] = self._window(train, t[train], first[train], end)
        return sets

    def _moment(self, rows: np.ndarray, t: np.ndarray, first: np.ndarray, exit_ms: np.ndarray,
                end: np.ndarray) -> tuple[np.ndarray, ...]:
        """Reports on the tick grid: each task's first positive in the first tick after it is known, the
        remaining tasks' negatives in the first tick after the exit. One row per (exposure, tick) in
        emit-time order; a report at or after the split end is not known in training and is dropped."""
        known = t[:, None] + np.where(first >= 0, first, exit_ms[:, None])
        tick = known // self.moment_ms + 1  # Unix-epoch grid: the first tick strictly after
        lo = int(tick.min(initial=0))
        span = int(tick.max(initial=0)) - lo + 1
        index = np.broadcast_to(np.arange(len(rows))[:, None], tick.shape)
        keep = tick * self.moment_ms < end[:, None]
        key = tick[keep] - lo + index[keep].astype(np.int64) * span
        unique, row_of = np.unique(key, return_inverse=True)
        label = np.zeros((len(unique), len(TASKS)), np.uint8)
        mask = np.zeros_like(label)
        task = np.broadcast_to(np.arange(len(TASKS)), tick.shape)[keep]
        label[row_of, task] = (first >= 0)[keep]
        mask[row_of, task] = 1
        emit = (unique % span + lo) * self.moment_ms
        order = np.argsort(emit, kind="stable")
        return rows[unique // span][order], emit[order], label[order], mask[order], np.zeros_like(label)

    def _window(self, rows: np.ndarray, t: np.ndarray, first: np.ndarray,
                end: np.ndarray) -> tuple[np.ndarray, ...]:
        """A fast-window row per exposure, read when its window closes; slow-window re-reports of the late
        positives (PU) when the slow window closes. Rows closing at or after the split end are dropped."""
        fast = ((first >= 0) & (first <= self.fast_ms)).astype(np.uint8)
        late = (first > self.fast_ms) & (first <= self.slow_ms)
        slow = np.flatnonzero(late.any(1) & (t + self.slow_ms < end))
        late = late[slow].astype(np.uint8)
        on_time = np.flatnonzero(t + self.fast_ms < end)
        emit = np.r_[t[on_time] + self.fast_ms, t[slow] + self.slow_ms]
        order = np.argsort(emit, kind="stable")
        exposure = np.r_[rows[on_time], rows[slow]][order]
        label = np.r_[fast[on_time], late][order]
        mask = np.r_[np.ones_like(fast[on_time]), late][order]
        pu = np.r_[np.zeros_like(fast[on_time]), late][order]
        return exposure, emit[order], label, mask, pu

    # ------------------------------------------------------------------ content embeddings
    def _embeddings(self, exposures: pl.DataFrame, rooms: pl.DataFrame, ids: np.ndarray,
                    titles: np.ndarray) -> dict[str, np.ndarray]:
        """Title embedding of each exposure's room and the mean title of the streamer's earlier rooms.

        Only the titles of exposed rooms are kept (row 0 = zeros = no title); rooms are indexed densely
        over the exposed ones (`sample_room`, 1-based) for the long-term table."""
        name_id = rooms["live_name_id"].fill_null(-1).to_numpy()
        room_title = np.where(name_id >= 0, np.searchsorted(ids, name_id), -1)  # row of the .npy, -1 none
        exposed = np.unique(exposures["room"].to_numpy())
        used = np.unique(room_title[exposed][room_title[exposed] >= 0])
        content_emb = np.zeros((len(used) + 1, titles.shape[1]), np.float32)
        content_emb[1:] = titles[used]
        exposed_title = np.where(room_title[exposed] >= 0, np.searchsorted(used, room_title[exposed]) + 1, 0)
        sample_room = np.searchsorted(exposed, exposures["room"].to_numpy())
        longterm = np.zeros((len(exposed) + 1, titles.shape[1]), np.float32)
        longterm[1:] = streamer_longterm(rooms, room_title, titles, exposed)
        room_content = np.zeros(rooms.height, np.int64)  # every room's row (history items need any room)
        slot = np.minimum(np.searchsorted(used, room_title), max(len(used) - 1, 0))
        known = (room_title >= 0) & (len(used) > 0)
        known &= used[slot] == room_title if len(used) else known
        room_content[known] = slot[known] + 1
        return {"content_emb": content_emb, "sample_content": exposed_title[sample_room].astype(np.int32),
                "room_longterm_emb": longterm, "sample_room": (sample_room + 1).astype(np.int32),
                "room_content": room_content}

    # ------------------------------------------------------------------ sequences
    def _sequences(self, exposures: pl.DataFrame, views: pl.DataFrame, rooms: pl.DataFrame, clicks: pl.DataFrame,
                   short: pl.DataFrame | None, vocab: dict[str, pl.DataFrame]) -> dict[str, np.ndarray]:
        """One item table (row 0 padding) + per sequence the item order and each view's [first, end): the
        items known strictly before the view's time (`sequence_items` then hides the view's own visit)."""
        users = exposures.select("user_id").unique()
        live = (clicks.join(users, on="user_id", how="semi")
                .join(rooms.select("room", "category"), on="room", how="left", maintain_order="left")
                .select("user_id", pl.col("streamer_id").alias("author_id"), "category",
                        pl.col("timestamp").alias("time"), pl.lit(LIVE, pl.Int8).alias("kind"),
                        (pl.col("watch_live_time") > self.long_view_ms).alias("long_view"),
                        (pl.col("timestamp") + self.long_view_ms).alias("known"), (pl.col("room") + 1).alias("visit")))
        parts = [live]
        if short is not None:
            parts.append(short.join(users, on="user_id", how="semi").select(
                "user_id", "author_id", "category", "time", pl.lit(SHORT, pl.Int8).alias("kind"), "long_view",
                pl.col("time").alias("known"), pl.lit(0, pl.Int64).alias("visit")))
        items = pl.concat(parts).with_row_index("item", offset=1)
        arrays = {"item_author": np.r_[0, encode(items["author_id"], vocab["streamer"]).to_numpy()].astype(np.int32),
                  "item_category": np.r_[0, encode(items["category"], vocab["category"]).to_numpy()].astype(np.int32),
                  "item_kind": np.r_[0, items["kind"].to_numpy()].astype(np.int8),
                  "item_time": np.r_[0, items["time"].to_numpy()].astype(np.int64),
                  "item_visit_room": np.r_[0, items["visit"].to_numpy()].astype(np.int64)}
        queries = views.select("user_id", pl.col("category_name").alias("category"),
                               pl.col("streamer_id").alias("author_id"), "time")
        shorts, lives = items.filter(pl.col("kind") == SHORT), items.filter(pl.col("kind") == LIVE)
        searches = {"short": (shorts, ["user_id"], "time"), "long": (shorts, ["user_id", "category"], "time"),
                    "aid": (shorts, ["user_id", "author_id"], "time"),
                    "livelong": (lives, ["user_id", "category"], "time"),
                    "mixed": (items.filter("long_view"), ["user_id"], "known")}
        for name, (pool, keys, time) in searches.items():
            order, start, end = last_before(pool, keys, time, queries)
            arrays[f"seq_{name}_order"] = order
            arrays[f"view_seq_{name}_first"], arrays[f"view_seq_{name}_end"] = start, end
        return arrays

    def _spec(self, vocab: dict[str, pl.DataFrame], content_dim: int) -> dict[str, Any]:
        cards = {field: frame.height + 2 for field, frame in vocab.items()}
        cards.update(hour=26, live_age=len(LIVE_AGE_EDGES) + 3, kind=3, author=cards["streamer"],
                     **{f: COUNTER_BUCKETS + 2 for f in self.context_fields[2:]})
        return {"user_fields": list(USER_FIELDS), "item_fields": list(ITEM_FIELDS),
                "context_fields": list(self.context_fields), "cardinalities": cards, "tasks": list(TASKS),
                "content_dim": content_dim, "sequences": list(SEQUENCES),
                "sequence_lengths": dict(self.sequence_lengths), "time_unit": "seconds",
                "long_view_seconds": self.long_view_ms / 1000, "moment_seconds": self.moment_ms / 1000}

    # ------------------------------------------------------------------ streams and batches
    def attach(self, prepared: Prepared) -> None:
        """Pick the training stream (both are cached), give every row its time and the evaluated row sets
        full masks. `train_time` (emit times) and `progressive_time` (exposure times), Unix ms, are what
        time-ordered training and progressive validation read (recbench/data/streaming.py)."""
        arrays = prepared.arrays
        for key in ("rows", "label", "mask", "pu"):
            arrays[f"train_{key}"] = arrays[f"train_{self.stream}_{key}"]
        for split in ("train", "progressive", "valid", "test"):
            arrays[f"{split}_time"] = arrays["view_time"][arrays[f"{split}_rows"]]
        for split in ("progressive", "valid", "test"):
            arrays[f"{split}_mask"] = np.ones_like(arrays[f"{split}_label"])
            arrays[f"{split}_pu"] = np.zeros_like(arrays[f"{split}_label"])
        prepared.meta["spec"]["stream"] = self.stream
        prepared.meta["stream"] = self.stream
        if "content_text" in arrays:
            self._attach_text_content(prepared)

    def _attach_text_content(self, prepared: Prepared) -> None:
        """Segment texts -> the text stage's embeddings (`data.text_embeddings`): the content table and the
        streamer's long-term table. Without embeddings the content is empty (content_dim 0)."""
        arrays, spec = prepared.arrays, prepared.meta["spec"]
        n_rows, n_exposed = len(arrays["content_text"]), len(arrays["exposed_rooms"])
        if not self.text_embeddings:
            arrays["content_emb"] = np.zeros((n_rows, 0), np.float32)
            arrays["room_longterm_emb"] = np.zeros((n_exposed + 1, 0), np.float32)
            spec["content_dim"] = 0
            return
        from recbench.text.export import load_embeddings

        ids, matrix = load_embeddings(self.text_embeddings, "segment")
        position = np.full(int(max(ids.max(initial=0), arrays["content_text"].max())) + 1, -1, np.int64)
        position[ids] = np.arange(len(ids))
        wanted = position[arrays["content_text"][1:]]
        if (wanted < 0).any():
            raise bad_input(Path(self.text_embeddings) / "segment", f"{int((wanted < 0).sum())} of {n_rows - 1} "
                            "served segments have no embedding", "re-run the text stage on this dataset")
        content = np.zeros((n_rows, matrix.shape[1]), np.float32)
        content[1:] = matrix[wanted]
        room_row, means = room_means(content[1:], arrays["content_room"][1:], len(arrays["room_start"]))
        rooms = pl.DataFrame({"streamer_code": arrays["room_streamer_code"], "start": arrays["room_start"]})
        longterm = np.zeros((n_exposed + 1, matrix.shape[1]), np.float32)
        longterm[1:] = streamer_longterm(rooms, room_row, means, arrays["exposed_rooms"])
        arrays["content_emb"], arrays["room_longterm_emb"] = content, longterm
        spec["content_dim"] = int(matrix.shape[1])

    # ------------------------------------------------------------------ text stage (LARM stage 1)
    TEXT_QUESTIONS = {"click": "q: will this user click into the room? a: ",
                      "long_view": "q: will this user watch for more than a minute? a: ",
                      "engage": "q: will this user comment, like or send a gift? a: ", "general": "continue: "}

    def has_text_corpus(self, prepared: Prepared) -> bool:
        """Segment texts present; else a banner: the content falls back to the room title."""
        if "segment_text" in prepared.frames:
            return True
        print(f"recbench: {self.name} has no {SEGMENT_TEXT_FILE} (data.content={self.content}): a room's content is "
              "its title embedding, fixed per room, and the text stage is skipped. LLM-Alignment's per-segment "
              "content needs the segment texts (datasets/kuailive/raw/README.md).", file=sys.stderr, flush=True)
        return False

    def text_corpus(self, prepared: Prepared) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Texts to embed: the distinct texts of the served segments, keyed by text id."""
        if "segment_text" not in prepared.frames:
            raise UserInputError(f"data '{self.name}' has no segment texts (data.content=title or no "
                                 f"{SEGMENT_TEXT_FILE}), so there is nothing for the text stage to embed. "
                                 "Fix: pass data.text_embeddings=null or provide the segment texts")
        frame = prepared.frames["segment_text"]
        return {"segment": (frame["text_id"].to_numpy(), frame["text"].to_list())}

    def text_tasks(self, prepared: Prepared, per_task: int, seed: int,
                   general_share: float = 0.0) -> list[tuple[str, str]]:
        """LARM's stage 1 aligned to behaviour: (prompt, answer) pairs from TRAINING exposures only, with
        labels as the training stream knew them before the validation period (masked reports never count).

        The prompt holds the texts of the user's last 3 long-viewed live segments before the exposure
        (the `mixed` sequence read at the exposure) and the text of the segment the room showed then; the
        answer is yes / no for three tasks: click (all exposures), long view and engagement (comment, like
        or gift; clicked exposures whose label was known). Each task draws `per_task` exposures, half of
        them positive where there are enough. `general_share` of all examples continue a segment text
        (plain-text modelling, which is what the export embeds)."""
        if not 0.0 <= general_share < 1.0:
            raise UserInputError(f"text.general_share={general_share}: not a share of the examples. "
                                 "Fix: use a value in [0, 1)")
        a, rng = prepared.arrays, np.random.default_rng(seed)
        text_of = dict(zip(prepared.frames["segment_text"]["text_id"].to_list(),
                           prepared.frames["segment_text"]["text"].to_list()))
        known, positive = self._training_labels(a)
        views = np.full(len(a["sample_time"]), -1, np.int64)  # each training exposure's view at the exposure
        views[a["view_exposure"][a["progressive_rows"]]] = a["progressive_rows"]
        click = known[:, 0] & (views >= 0)
        engage_known = known[:, 2:].all(1)
        pools = {"click": (click, positive[:, 0]),
                 "long_view": (click & positive[:, 0] & known[:, 1], positive[:, 1]),
                 "engage": (click & positive[:, 0] & engage_known, positive[:, 2:].any(1))}
        tensors = {k: torch.as_tensor(a[k]) for k in ("view_seq_mixed_first", "view_seq_mixed_end", "seq_mixed_order",
                                                      "view_exposure", "item_visit_room", "sample_visit_room",
                                                      "item_time", "sample_time")}

        def segment_text(content_row: int) -> str:
            return text_of.get(int(a["content_text"][content_row]), "") if content_row > 0 else ""

        def prompt(exposure: int, question: str) -> str:
            view = int(views[exposure])
            item, valid = self.sequence_items(tensors, "mixed", torch.tensor([view]))
            recent = [segment_text(int(a["item_content"][i])) for i in item[0][valid[0]].tolist()]
            recent = [t for t in recent if t][-3:]
            now = segment_text(int(a["view_content"][view]))
            return f"recently watched long: {' | '.join(recent) or 'nothing'}\nnow on screen: {now}\n{question}"

        examples = []
        for task, (pool, answer) in pools.items():
            yes, no = np.flatnonzero(pool & answer), np.flatnonzero(pool & ~answer)
            n_yes = min(len(yes), per_task // 2)
            chosen = np.r_[rng.choice(yes, n_yes, replace=False),
                           rng.choice(no, min(len(no), per_task - n_yes), replace=False)]
            for exposure in np.sort(chosen):
                examples.append((prompt(int(exposure), self.TEXT_QUESTIONS[task]),
                                 "yes" if answer[exposure] else "no"))
        if general_share > 0:
            count = int(round(general_share / (1 - general_share) * len(examples)))
            from recbench.text.general import continuations

            texts = prepared.frames["segment_text"]["text"].to_list()  # distinct, sorted: the same draws
            examples += continuations(texts, count, rng, self.TEXT_QUESTIONS["general"])
        return examples

    @staticmethod
    def _training_labels(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per exposure and task: was the label reported by the moment stream during training, and was it
        positive ([n_exposures, 5] bool each)."""
        rows = arrays["train_moment_rows"]
        exposure = arrays["view_exposure"][rows]
        mask, label = arrays["train_moment_mask"] > 0, arrays["train_moment_label"] > 0.5
        known = np.zeros((len(arrays["sample_time"]), len(TASKS)), bool)
        positive = np.zeros_like(known)
        np.logical_or.at(known, exposure, mask)
        np.logical_or.at(positive, exposure, mask & label)
        return known, positive

    def sequence_items(self, tables: dict[str, torch.Tensor], name: str,
                       view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] item rows (0 = padding) and validity of sequence `name` for these views. A view read after
        its exposure hides its own visit (the user's clicks on that room from the exposure on): its click
        is the row's label."""
        length = self.sequence_lengths[name]
        start = take(tables[f"view_seq_{name}_first"], view).long()
        end = take(tables[f"view_seq_{name}_end"], view).long()
        position = end[:, None] - length + torch.arange(length)[None, :]  # oldest .. newest
        valid = position >= start[:, None]
        item = take(tables[f"seq_{name}_order"], torch.where(valid, position, 0)).long()  # position 0 -> padding item
        exposure = take(tables["view_exposure"], view)
        own = ((take(tables["item_visit_room"], item) == take(tables["sample_visit_room"], exposure)[:, None])
               & (take(tables["item_time"], item) >= take(tables["sample_time"], exposure)[:, None]))
        valid = valid & ~own
        return torch.where(valid, item, 0), valid

    def assemble(self, tables: dict[str, torch.Tensor], split: str, rows: torch.Tensor,
                 keys: frozenset[str] | None = None) -> dict[str, torch.Tensor]:  # builds every key
        t = tables
        view = take(t[f"{split}_rows"], rows)
        ep = take(t["view_exposure"], view)
        batch = {f: take(t[f"sample_{f}"], ep).long() for f in (*USER_FIELDS, *ITEM_FIELDS)}
        batch.update({f: take(t[f"view_{f}"], view).long() for f in self.context_fields})
        batch["group"] = take(t["sample_group"], ep)
        batch["read_minute"] = take(t["view_time"], view) // MINUTE_MS
        for key in ("label", "mask", "pu"):
            values = take(t[f"{split}_{key}"], rows).float()
            for k, task in enumerate(TASKS):
                batch[f"{key}_{task}"] = values[:, k]
        batch["live_content_emb"] = take(t["content_emb"], take(t["view_content"], view).long())
        batch["streamer_longterm_emb"] = take(t["room_longterm_emb"], take(t["sample_room"], ep).long())
        for name in SEQUENCES:
            item, valid = self.sequence_items(t, name, view)
            batch[f"seq_{name}_author"] = take(t["item_author"], item).long()
            batch[f"seq_{name}_category"] = take(t["item_category"], item).long()
            batch[f"seq_{name}_kind"] = take(t["item_kind"], item).long()
            batch[f"seq_{name}_mask"] = valid
            if self.history_content and name in HISTORY_CONTENT_SEQUENCES:
                self._history_content(t, name, item, valid, batch)
        return batch

    @staticmethod
    def _history_content(t: dict[str, torch.Tensor], name: str, item: torch.Tensor, valid: torch.Tensor,
                         batch: dict[str, torch.Tensor]) -> None:
        """The live rooms of sequence `name` as candidates at the time the user clicked them: candidate
        fields `hist_<name>_<field>`, `hist_<name>_content` (what the room showed then), `hist_<name>_longterm`
        and `hist_<name>_mask` (a valid live item)."""
        live = valid & (take(t["item_kind"], item) == LIVE)
        item = torch.where(live, item, 0)
        for field in ITEM_FIELDS:
            batch[f"hist_{name}_{field}"] = take(t[f"item_field_{field}"], item).long()
        batch[f"hist_{name}_content"] = take(t["content_emb"], take(t["item_content"], item).long())
        batch[f"hist_{name}_longterm"] = take(t["room_longterm_emb"], take(t["item_longterm"], item).long())
        batch[f"hist_{name}_mask"] = live


# ---------------------------------------------------------------------- helpers (vectorised)
def clean(column: pl.Expr) -> pl.Expr:
    """Categorical text: stripped, lower-cased, empty -> null."""
    text = column.cast(pl.String).str.strip_chars().str.to_lowercase()
    return pl.when(text == "").then(None).otherwise(text)


def vocabulary(values: pl.Series) -> pl.DataFrame:
    """Each distinct non-null value -> `index` 2, 3, ... in sorted order (0 padding/missing, 1 unseen)."""
    distinct = values.drop_nulls().unique().sort()
    return pl.DataFrame({"value": distinct, "index": np.arange(2, len(distinct) + 2, dtype=np.int64)})


def encode(values: pl.Series, vocab: pl.DataFrame) -> pl.Series:
    """Vocabulary index of each value: null -> 0, unseen -> 1."""
    frame = pl.DataFrame({"value": values.cast(vocab["value"].dtype)})
    index = frame.join(vocab, on="value", how="left", maintain_order="left")["index"]
    return pl.Series(values.name, np.where(values.is_null().to_numpy(), 0, index.fill_null(1).to_numpy()))


def emit_delays(arrays: dict[str, np.ndarray], stream: str) -> dict[str, float]:
    """Seconds from exposure to emit time of a training stream's rows: mean and percentiles."""
    views = arrays[f"train_{stream}_rows"]
    delay = (arrays["view_time"][views] - arrays["sample_time"][arrays["view_exposure"][views]]) / 1000
    if not len(delay):
        return {}
    p50, p90 = np.percentile(delay, [50, 90])
    return {"mean": round(float(delay.mean()), 1), "p50": round(float(p50), 1), "p90": round(float(p90), 1)}


def visit_key(user: np.ndarray, room: np.ndarray) -> np.ndarray:
    """One int64 per (user, room) pair (room indices stay below 2**32)."""
    return (user.astype(np.int64) << 32) + room


def count_in(event_key: np.ndarray, event_time: np.ndarray, key: np.ndarray, lo: np.ndarray,
             hi: np.ndarray) -> np.ndarray:
    """Per query, the events with its key and time in [lo, hi). Keys are made dense first, so that
    (key, time) fits one int64 sort key whatever the ids are."""
    if not len(event_key):
        return np.zeros(len(key), np.int64)
    keys, code = np.unique(event_key, return_inverse=True)
    query = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
    found = keys[query] == key
    base = int(min(event_time.min(), lo.min())) - 1
    span = int(max(event_time.max(), hi.max())) - base + 1
    if len(keys) * span >= 1 << 62:
        raise RuntimeError("count_in: too many keys x time span for one int64 sort key")
    ordered = np.sort(code.astype(np.int64) * span + (event_time - base))
    offset = query.astype(np.int64) * span - base
    counts = np.searchsorted(ordered, offset + hi, side="left") - np.searchsorted(ordered, offset + lo, side="left")
    return np.where(found & (hi > lo), counts, 0)


def last_before(items: pl.DataFrame, keys: list[str], time: str,
                queries: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items grouped by `keys`, each group in time order, and per query the [first, end) positions of
    its group's items with time strictly before the query time.

    Returns (order, first, end): order[0] = 0 is a sentinel (padding item) and order[p] (p >= 1) the item
    row at sorted position p; a query whose key has no item gets first = end = 0."""
    items = items.drop_nulls(keys)
    codes = items.select(keys).unique(maintain_order=True).with_row_index("code")
    item_code = items.join(codes, on=keys, how="left", maintain_order="left")["code"].to_numpy().astype(np.int64)
    query_code = queries.select(keys).join(codes, on=keys, how="left", maintain_order="left")["code"]
    item_time, query_time = items[time].to_numpy(), queries["time"].to_numpy()
    base = int(min(item_time.min(initial=query_time.min()), query_time.min())) - 1
    span = int(max(item_time.max(initial=query_time.max()), query_time.max())) - base + 1
    if codes.height * span >= 1 << 62:
        raise RuntimeError("last_before: too many keys x time span for one int64 sort key")
    key = item_code * span + (item_time - base)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    found = query_code.is_not_null().to_numpy()
    code = query_code.fill_null(0).to_numpy().astype(np.int64)
    first = np.searchsorted(sorted_key, code * span, side="left") + 1
    end = np.searchsorted(sorted_key, code * span + (query_time - base), side="left") + 1
    first, end = np.where(found, first, 0), np.where(found, end, 0)
    order_rows = np.r_[0, items["item"].to_numpy()[order]].astype(np.int32)
    return order_rows, first.astype(np.int32), end.astype(np.int32)


def longterm_rows(exposures: pl.DataFrame, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per sequence item, its room's row in `room_longterm_emb` (rows follow the exposed rooms, 1-based;
    0: a short video or a room never exposed)."""
    exposed = np.unique(exposures["room"].to_numpy())
    room = arrays["item_visit_room"] - 1
    slot = np.minimum(np.searchsorted(exposed, room), len(exposed) - 1)
    return np.where((room >= 0) & (exposed[slot] == room), slot + 1, 0).astype(np.int32)


def streamer_longterm(rooms: pl.DataFrame, room_title: np.ndarray, titles: np.ndarray, exposed: np.ndarray,
                      block: int = 200_000) -> np.ndarray:
    """For each exposed room, the mean title embedding of its streamer's titled rooms that started
    strictly before it (zeros if none).

    Titled rooms of the exposed streamers are sorted by (streamer, start); a query sums a prefix of its
    streamer's run. Prefix sums are taken per block of whole streamers (~`block` rooms) in float64, so
    differences stay exact and memory stays bounded on the real 11.6M-room file."""
    code, start = rooms["streamer_code"].to_numpy(), rooms["start"].to_numpy()
    base = int(start.min()) - 1
    span = int(start.max()) - base + 1
    key = code * span + (start - base)
    hist = np.flatnonzero(np.isin(code, code[exposed]) & (room_title >= 0))
    hist = hist[np.argsort(key[hist], kind="stable")]
    hist_key, hist_code = key[hist], code[hist]
    first = np.searchsorted(hist_key, code[exposed] * span, side="left")  # the streamer's first titled room
    stop = np.searchsorted(hist_key, key[exposed], side="left")  # ... and the last one started before
    runs = np.flatnonzero(np.r_[True, hist_code[1:] != hist_code[:-1]])  # blocks end where a streamer does
    cuts = np.unique(np.r_[runs[np.minimum(np.searchsorted(runs, np.arange(0, len(hist), block)), len(runs) - 1)]
                           if len(runs) else [], len(hist)]).astype(np.int64)
    out = np.zeros((len(exposed), titles.shape[1]), np.float32)
    for lo, hi in zip(np.r_[0, cuts[:-1]], cuts):
        q = np.flatnonzero((first >= lo) & (first < hi) & (stop > first))
        if not len(q):
            continue
        cum = np.zeros((hi - lo + 1, titles.shape[1]))
        np.cumsum(titles[room_title[hist[lo:hi]]], axis=0, dtype=np.float64, out=cum[1:])
        out[q] = (cum[stop[q] - lo] - cum[first[q] - lo]) / (stop[q] - first[q])[:, None]
    return out


# ---------------------------------------------------------------------- reading + validation
def title_ids(rooms: pl.DataFrame) -> np.ndarray:
    """Sorted distinct live_name_id != -1 of room.csv: row k of title_embeddings.npy is id k."""
    return np.unique(rooms.filter(pl.col("live_name_id") >= 0)["live_name_id"].to_numpy())


def find_file(directory: Path, name: str) -> Path | None:
    """The file under its current name, else under its pre-2025-07-29 name, else None."""
    for candidate in (name, OLD_NAMES.get(name)):
        if candidate and (Path(directory) / candidate).is_file():
            return Path(directory) / candidate
    return None


def check_ms(path: Path, frame: pl.DataFrame, column: str) -> None:
    """Stop on timestamps that are not Unix milliseconds (seconds are the usual mistake)."""
    value = pl.col(column)
    bad = value.is_not_null() & ((value < MS_FLOOR) | (value >= MS_CEIL))
    if frame.select(bad.any()).item():
        line, raw = first_bad(frame, bad, column)
        unit = "Unix seconds" if float(raw) < MS_FLOOR else "not Unix milliseconds"  # float: also nan / inf
        raise bad_input(path, f"line {line} has {raw}, which looks like {unit}; KuaiLive timestamps are Unix "
                        "milliseconds", "multiply second timestamps by 1000 (or re-extract the original file)", column)


def read_events(path: Path, extra: tuple[str, ...]) -> pl.DataFrame:
    dtypes = {c: pl.Int64 for c in EVENT_COLUMNS} | {c: pl.Float64 for c in extra}
    frame = read_table(path, (*EVENT_COLUMNS, *extra), dtypes, aliases=ALIASES)
    require_non_null(path, frame, (*EVENT_COLUMNS, *extra))
    require_non_negative(path, frame, ("user_id", "live_id", "streamer_id"))
    check_ms(path, frame, "timestamp")
    require_non_negative_numbers(path, frame, extra, below=2.0**53)  # exact in a float; cast to Int64 below
    warn_duplicates(path, frame, (*EVENT_COLUMNS, *extra), "each is kept as a separate event")
    return frame.with_columns(pl.col(c).round(0).cast(pl.Int64) for c in extra).with_row_index("line", offset=2)


def read_rooms(path: Path) -> pl.DataFrame:
    columns = ("live_id", "streamer_id", "live_type", "start_timestamp", "end_timestamp", "live_content_category",
               "live_name_id")
    dtypes = {c: pl.Int64 for c in ("live_id", "streamer_id", "start_timestamp", "end_timestamp", "live_name_id")}
    frame = read_table(path, columns, dtypes, aliases=ALIASES)
    require_non_null(path, frame, ("live_id", "streamer_id", "start_timestamp"))
    require_non_negative(path, frame, ("live_id", "streamer_id"))
    for column in ("start_timestamp", "end_timestamp"):
        check_ms(path, frame, column)
    backwards = pl.col("end_timestamp") < pl.col("start_timestamp")
    if frame.select(backwards.any()).item():
        line, raw = first_bad(frame, backwards, "end_timestamp")
        raise bad_input(path, f"line {line} has end_timestamp {raw} before its start_timestamp",
                        "fix or drop that row", "end_timestamp")
    untitled = pl.col("live_name_id") < -1  # -1 (or empty) = no title; another negative is a shifted value
    if frame.select(untitled.any()).item():
        line, raw = first_bad(frame, untitled, "live_name_id")
        raise bad_input(path, f"line {line} has live_name_id {raw}, out of range (a row of {TITLE_FILE}, or -1 for "
                        "no title)", "fix or drop that row", "live_name_id")
    return frame


def read_profiles(path: Path, key: str, columns: tuple[str, ...]) -> pl.DataFrame:
    frame = read_table(path, (key, *columns), {key: pl.Int64}, aliases=ALIASES)
    require_non_null(path, frame, (key,))
    require_non_negative(path, frame, (key,))
    return frame.unique(key, keep="first", maintain_order=True)


def read_titles(path: Path, rooms: pl.DataFrame, room_path: Path) -> np.ndarray:
    """title_embeddings.npy: 2-D float, one row per distinct live_name_id != -1 of room.csv."""
    try:
        titles = np.load(path, mmap_mode="r", allow_pickle=False)  # only the rows in use are read
    except (ValueError, OSError) as error:
        raise bad_input(path, f"is not a numpy .npy array ({error})", "re-download or re-extract it")
    if titles.ndim != 2 or not np.issubdtype(titles.dtype, np.floating):
        raise bad_input(path, f"has shape {titles.shape} and dtype {titles.dtype}, not a 2-D float array",
                        "re-download or re-extract it")
    finite = np.isfinite(titles).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise bad_input(path, f"row {row} has a non-finite value ({titles[row][~np.isfinite(titles[row])][0]})",
                        "re-export the title embeddings (every value finite)")
    n_ids = len(title_ids(rooms))
    if titles.shape[0] != n_ids:
        raise bad_input(path, f"has {titles.shape[0]} rows but {room_path.name} has {n_ids} distinct live_name_id "
                        "!= -1 (one row each, in sorted order)", "use the embeddings file of the same release")
    return titles.astype(np.float32, copy=False)


def read_all(raw_dir: Path) -> dict[str, Any]:
    """Read and validate every file (ids numeric, timestamps in ms, windows ordered, titles aligned)."""
    room_path = find_file(raw_dir, ROOM_FILE)
    rooms = read_rooms(room_path)
    tables: dict[str, Any] = {"rooms": rooms, "events": {}}
    for kind, (name, extra) in EVENT_FILES.items():
        tables["events"][kind] = read_events(raw_dir / name, extra)
    tables["users"] = read_profiles(raw_dir / USER_FILE, "user_id", tuple(USER_PROFILE.values()))
    tables["streamers"] = read_profiles(find_file(raw_dir, STREAMER_FILE), "streamer_id",
                                        tuple(STREAMER_PROFILE.values()))
    tables["titles"] = read_titles(find_file(raw_dir, TITLE_FILE), rooms, room_path)
    if (raw_dir / PHOTO_FILE).is_file():
        tables["photos"] = read_photos(raw_dir / PHOTO_FILE)
        if (raw_dir / PHOTO_TAG_FILE).is_file():
            tags = read_table(raw_dir / PHOTO_TAG_FILE, ("photo_id", "first_level_category_name"),
                              {"photo_id": pl.Int64})
            require_non_null(raw_dir / PHOTO_TAG_FILE, tags, ("photo_id",))
            require_non_negative(raw_dir / PHOTO_TAG_FILE, tags, ("photo_id",))
            tables["photo_tags"] = tags.unique("photo_id", keep="first", maintain_order=True)
    return tables


def read_photos(path: Path) -> pl.DataFrame:
    """photo_interaction.csv with a `timestamp` (ms) or, for daily aggregates, a `p_date` (yyyyMMdd)."""
    header = {ALIASES.get(n, n) for n in sniff_header(path)[0]}
    time = "timestamp" if "timestamp" in header else "p_date"
    if time not in header:
        raise bad_input(path, "has neither a timestamp (Unix ms) nor a p_date (yyyyMMdd) column",
                        "add one: sequences need to know when each short video was played", "timestamp")
    columns = ("user_id", "photo_id", "author_id", "complete_play_cnt", time)
    dtypes = {"user_id": pl.Int64, "photo_id": pl.Int64, "author_id": pl.Int64, "complete_play_cnt": pl.Float64,
              time: pl.Int64}
    frame = read_table(path, columns, dtypes)
    require_non_null(path, frame, ("user_id", "photo_id", "author_id", time))
    require_non_negative(path, frame, ("user_id", "photo_id", "author_id"))
    require_non_negative_numbers(path, frame, ("complete_play_cnt",))  # NaN > 0 would read as a complete play
    if time == "timestamp":
        check_ms(path, frame, "timestamp")
        return frame.rename({"timestamp": "time"})
    date = pl.col("p_date").cast(pl.String).str.to_date("%Y%m%d", strict=False)
    # a daily aggregate is known at the end of its local day
    midnight = (date.cast(pl.Int64) + 1) * DAY_MS - LOCAL_OFFSET_MS
    bad = date.is_null() | (midnight < MS_FLOOR) | (midnight >= MS_CEIL)  # the plausible range of the ms stamps
    if frame.select(bad.any()).item():
        line, raw = first_bad(frame, bad, "p_date")
        raise bad_input(path, f"line {line} has p_date '{raw}', not a yyyyMMdd date in 1973..5138",
                        "fix or drop that row", "p_date")
    return frame.with_columns(time=midnight).drop("p_date")


def short_videos(photos: pl.DataFrame | None, tags: pl.DataFrame | None) -> pl.DataFrame | None:
    """Short-video rows: user, author, category (first-level tag), time, long view (a complete play)."""
    if photos is None:
        return None
    if tags is not None:
        photos = photos.join(tags.select("photo_id", clean(pl.col("first_level_category_name")).alias("category")),
                             on="photo_id", how="left", maintain_order="left")
    else:
        photos = photos.with_columns(category=pl.lit(None, pl.String))
    return photos.select("user_id", "author_id", "category", "time",
                         (pl.col("complete_play_cnt").fill_null(0) > 0).alias("long_view"))


def merge_rooms(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per live_id (room.csv repeats a cross-day room per p_date): earliest start, latest end."""
    return (frame.group_by("live_id", maintain_order=True)
             .agg(pl.col("streamer_id").first(), pl.col("start_timestamp").min().alias("start"),
                  # an empty end means the room had not ended: open until any event
                  pl.when(pl.col("end_timestamp").is_null().any()).then(OPEN_END)
                  .otherwise(pl.col("end_timestamp").max()).alias("end"),
                  clean(pl.col("live_type")).first().alias("live_type"),
                  clean(pl.col("live_content_category")).first().alias("category"),
                  pl.col("live_name_id").first())
             .sort("streamer_id", "start", "live_id")
             .with_row_index("room")
             .with_columns(pl.col("room").cast(pl.Int64),
                           streamer_code=pl.col("streamer_id").rank("dense").cast(pl.Int64)))


def check_streamers(events: pl.DataFrame, streamers: pl.DataFrame, path: Path) -> None:
    unknown = events.join(streamers.select("streamer_id"), on="streamer_id", how="anti")
    if unknown.height:
        row = unknown.sort("line").row(0, named=True)
        raise bad_input(path, f"line {row['line']} has streamer_id {row['streamer_id']}, which is not in "
                        f"{STREAMER_FILE}", f"add the streamer to {STREAMER_FILE} or drop its events", "streamer_id")


def place(events: pl.DataFrame, rooms: pl.DataFrame, path: Path, drop: bool) -> tuple[pl.DataFrame, int]:
    """Put each event in the room whose [start, end) window contains it (see the module docstring)."""
    window = rooms.select("room", "live_id", "streamer_id", "start", "end")
    own = (events.join(window.rename({"streamer_id": "own_streamer"}), on="live_id", how="left", maintain_order="left")
           .select(pl.when((pl.col("own_streamer") == pl.col("streamer_id")) & (pl.col("start") <= pl.col("timestamp"))
                           & (pl.col("timestamp") < pl.col("end"))).then(pl.col("room")).alias("own_room")))
    by_time = (events.select("line", "streamer_id", "timestamp").sort("timestamp")
               .join_asof(window.drop("live_id").sort("start"), left_on="timestamp", right_on="start",
                          by="streamer_id", strategy="backward", check_sortedness=False)
               .select("line", pl.when(pl.col("timestamp") < pl.col("end")).then(pl.col("room")).alias("window_room")))
    placed = (events.with_columns(own["own_room"])
              .join(by_time, on="line", how="left", maintain_order="left")
              .with_columns(room=pl.coalesce("own_room", "window_room")).drop("own_room", "window_room"))
    missing = placed.filter(pl.col("room").is_null())
    if missing.height and not drop:
        row = missing.row(0, named=True)
        raise bad_input(path, f"line {row['line']}: timestamp {row['timestamp']} (live_id {row['live_id']}, streamer "
                        f"{row['streamer_id']}) lies outside every [start_timestamp, end_timestamp) window of that "
                        f"streamer in {ROOM_FILE}", "fix the row or the room windows, or pass "
                        "data.unmatched_events=drop to drop such events", "timestamp")
    return placed.filter(pl.col("room").is_not_null()).drop("live_id"), missing.height
