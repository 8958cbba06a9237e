"""KuaiLive-M3 (Kuaishou live streaming + short video; github.com/imgkkk574/KuaiLive-M3, data on Hugging Face
imgkkk2004/KuaiLive-M3) -> exactly the batches of the KuaiLive adapter (same spec, keys, dtypes): live
exposures with five task labels, the Moment / window training stream and the five Cross sequences, here
with a real short-video domain and segment content embeddings.

Format and preprocessing rules: datasets/kuailive_m3/raw/README.md (what M3 changes) and
datasets/kuailive/raw/README.md (the shared pipeline).

Code map (KuaiLiveM3Adapter.build, in order):
  read + validate  _read -> read_m3 (CSV or parquet: read_parquet; times: to_ms, parse_datetime), _short_videos;
                   find (CSV / parquet variants), shards; missing_files, fingerprint (+ the shards' bytes)
  M3 -> KuaiLive   _read: clicks and gifts from the sessions, likes' streamers from the rooms, room categories
                   from short-video plays, author profiles as streamer profiles
  pipeline         KuaiLiveAdapter's steps unchanged (place, _exposures, _first_positive, _index, _features,
                   _rows_and_views, _sequences, _item_fields); m3_errors names the M3 files in their messages
  content          _shipped_content (room: live_emb_64) / _segment_content (segment: live_emb_128_ts, per view
                   and per live history room at its click), embedding_matrix; no text stage (the shipped
                   embeddings are the content: data.text_embeddings=auto is ignored)
  arrays, assemble KuaiLiveAdapter's (recbench/data/kuailive.py)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recbench.data import kuailive as kl
from recbench.data.base import Prepared, hash_files
from recbench.data.kuailive import (
    STREAMER_PROFILE,
    USER_PROFILE,
    LIVE,
    KuaiLiveAdapter,
    last_before,
    longterm_rows,
    merge_rooms,
    place,
    read_photos,
    short_videos,
)
from recbench.data.live_content import room_means
from recbench.data.kuailive_m3_replica import (
    AUTHOR_FILE,
    COMMENT_FILE,
    INTERACTION_FILE,
    LIKE_FILE,
    LOCAL_TZ,
    PHOTO_FILE,
    PHOTO_PLAY_FILE,
    PHOTO_TAG_FILE,
    ROOM_EMB_FILE,
    ROOM_META_FILE,
    SEGMENT_DIR,
    SHOW_FILE,
    USER_SET_FILE,
    KuaiLiveM3ReplicaConfig,
    write_kuailive_m3_replica,
)
from recbench.data.readers import (
    first_bad,
    read_table,
    require_non_negative,
    require_non_negative_numbers,
    require_non_null,
)
from recbench.errors import UserInputError, bad_input

ALIASES = {"streamer_id": "author_id", "live_stream_id": "live_id"}
VARIANTS = {SHOW_FILE: "live_show.csv", ROOM_META_FILE: "live_room_meta.csv"}  # parquet or CSV
CONTENT = ("auto", "segment", "room")


class KuaiLiveM3Adapter(KuaiLiveAdapter):
    name = "kuailive_m3"
    # 5: negative ids and non-finite times / embeddings are one line naming the row (a cache of such files is not
    # reused); 4: item content and fields; 3: rows index views read at their emit time (2: row arrays `<split>_rows`)
    version = "5"
    smoke_replica = {"n_users": 60, "n_streamers": 60, "n_authors": 80, "live_exposures_per_user": 20.0}  # one-step smoke runs
    required_files = (INTERACTION_FILE, SHOW_FILE, COMMENT_FILE, LIKE_FILE, ROOM_META_FILE, AUTHOR_FILE,
                      PHOTO_TAG_FILE)
    optional_files = (PHOTO_PLAY_FILE, PHOTO_FILE, ROOM_EMB_FILE, USER_SET_FILE)

    def __init__(self, source: str, raw_dir: str, cache_dir: str, replica_dir: str, stream: str,
                 long_view_seconds: float, moment_seconds: float, fast_window_minutes: float,
                 slow_window_minutes: float, counter_minutes: list[int], sequence_lengths: dict[str, int],
                 unmatched_events: str, train_start: str, valid_start: str, test_start: str, test_end: str,
                 replica: dict[str, Any], content_embeddings: str = "auto", use_cache: bool = True,
                 history_content: bool = False, text_embeddings: str | None = None, text: Any = None,
                 text_dir: str | None = None, content: str = "auto") -> None:
        super().__init__(source, raw_dir, cache_dir, replica_dir, stream, long_view_seconds, moment_seconds,
                         fast_window_minutes, slow_window_minutes, counter_minutes, sequence_lengths, unmatched_events,
                         train_start, valid_start, test_start, test_end, replica, use_cache,
                         history_content=history_content)
        if text_embeddings not in (None, "auto"):
            raise UserInputError("data.text_embeddings: KuaiLive-M3 ships its segment embeddings and has no texts "
                                 "for the text stage. Fix: leave data.text_embeddings unset")
        # text_embeddings=auto (a model's default on KuaiLive) is ignored: the shipped embeddings are the content
        if content == "title":  # the title-only ablation: the room-level embedding (M3 has no title vectors)
            content_embeddings = "room"
        if content_embeddings not in CONTENT:
            raise UserInputError(f"data.content_embeddings='{content_embeddings}' is not one of {', '.join(CONTENT)}. "
                                 "Fix: pass data.content_embeddings=auto|segment|room")
        self.content_embeddings = content_embeddings

    def preprocess_config(self) -> dict[str, Any]:
        return {**super().preprocess_config(), "content_embeddings": self.content_embeddings}

    def replica_config(self) -> dict[str, Any]:
        return KuaiLiveM3ReplicaConfig(**self.replica).to_dict()

    def write_replica(self, out_dir: Path) -> None:
        write_kuailive_m3_replica(out_dir, KuaiLiveM3ReplicaConfig(**self.replica))

    def missing_files(self, directory: Path) -> list[str]:
        missing = [name for name in self.required_files if find(directory, name) is None]
        if find(directory, PHOTO_PLAY_FILE) is None and find(directory, PHOTO_FILE) is None:
            missing.append(f"{PHOTO_PLAY_FILE} (or {PHOTO_FILE})")
        if not shards(directory) and find(directory, ROOM_EMB_FILE) is None:
            missing.append(f"{SEGMENT_DIR}/*.parquet (or {ROOM_EMB_FILE})")
        return missing

    def fingerprint(self, files_dir: Path) -> str:
        present = [p for p in (find(files_dir, n) for n in self.required_files + self.optional_files) if p]
        config = {"adapter": self.name, "version": self.version, "preprocess": self.preprocess_config()}
        text = hash_files(present + shards(files_dir)) + repr(sorted(config.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    # ------------------------------------------------------------------ build
    def build(self, raw_dir: Path) -> Prepared:
        tables = self._read(raw_dir)
        rooms = merge_rooms(tables["rooms"])
        events, dropped = {}, {}
        for kind, (frame, path) in tables["events"].items():
            events[kind], dropped[kind] = m3_errors(place, frame, rooms, path, self.unmatched_events == "drop")
            dropped[kind] += tables["unknown_rooms"].get(kind, 0)
        exposures = m3_errors(self._exposures, events, rooms, raw_dir)
        first = self._first_positive(exposures, events)
        short = tables["short"]
        exposures, vocab = self._index(exposures, tables, short)
        arrays, views = self._rows_and_views(exposures, first)
        arrays.update(self._features(exposures, views, events))
        arrays.update(self._sequences(exposures, views, rooms, events["click"], short, vocab))
        arrays.update(self._item_fields(rooms, tables["streamers"], vocab, arrays))
        content, mode, n_segments = self._shipped_content(exposures, views, rooms, raw_dir, arrays)
        arrays.update(content)
        arrays["item_longterm"] = longterm_rows(exposures, arrays)
        stats = self._stats(exposures, rooms, events, dropped, short, first, arrays)
        stats.update(content=mode, segments=n_segments)
        meta = {"spec": self._spec(vocab, int(arrays["content_emb"].shape[1])),
                "splits": {s: int((exposures["split"] == i).sum()) for i, s in enumerate(("train", "valid", "test"))},
                "stats": stats}
        arrays = {k: v if v.flags.writeable else v.copy() for k, v in arrays.items()}
        return Prepared(arrays=arrays, meta=meta)

    def _read(self, raw_dir: Path) -> dict[str, Any]:
        """Read + validate the M3 files into the frames the KuaiLive pipeline works on."""
        drop = self.unmatched_events == "drop"
        path = find(raw_dir, INTERACTION_FILE)
        sessions = read_m3(path, ("user_id", "live_id", "author_id", "live_play_start_timestamp", "play_duration",
                                  "send_gift_cnt"), ("user_id", "live_id", "author_id"),
                           ("play_duration", "send_gift_cnt"), "live_play_start_timestamp")
        clicks = sessions.select("line", "user_id", "live_id", pl.col("author_id").alias("streamer_id"), "timestamp",
                                 pl.col("play_duration").alias("watch_live_time"))
        gifts = sessions.filter(pl.col("send_gift_cnt") > 0).select(
            "line", "user_id", "live_id", pl.col("author_id").alias("streamer_id"),
            (pl.col("timestamp") + (pl.col("play_duration") - 1).clip(0)).alias("timestamp"),
            pl.col("send_gift_cnt").alias("gift_price"))
        show_path = find(raw_dir, SHOW_FILE)
        shows = read_m3(show_path, ("user_id", "live_id", "author_id", "show_timestamp"),
                        ("user_id", "live_id", "author_id"), (), "show_timestamp").rename({"author_id": "streamer_id"})
        comment_path = find(raw_dir, COMMENT_FILE)
        comments = read_m3(comment_path, ("user_id", "live_id", "author_id", "comment_ts"),
                           ("user_id", "live_id", "author_id"), (), "comment_ts").rename({"author_id": "streamer_id"})
        room_path = find(raw_dir, ROOM_META_FILE)
        meta = read_m3(room_path, ("live_id", "author_id", "start_timestamp", "end_timestamp"), ("live_id", "author_id"),
                       (), "start_timestamp", optional_times=("end_timestamp",))
        backwards = pl.col("end_timestamp") < pl.col("timestamp")
        if meta.select(backwards.any()).item():
            line, raw = first_bad(meta, backwards, "end_timestamp")
            raise bad_input(room_path, f"line {line} has end_timestamp {raw} before its start_timestamp",
                            "fix or drop that row", "end_timestamp")
        like_path = find(raw_dir, LIKE_FILE)
        likes = read_m3(like_path, ("user_id", "live_id", "like_timestamp"), ("user_id", "live_id"), (),
                        "like_timestamp")
        owner = meta.group_by("live_id").agg(pl.col("author_id").first().alias("streamer_id"))
        likes = likes.join(owner, on="live_id", how="left", maintain_order="left")
        unknown = likes.filter(pl.col("streamer_id").is_null())
        if unknown.height and not drop:
            row = unknown.row(0, named=True)
            raise bad_input(like_path, f"line {row['line']} has live_id {row['live_id']}, which is not in "
                            f"{ROOM_META_FILE}", "drop the row or pass data.unmatched_events=drop", "live_id")
        likes = likes.filter(pl.col("streamer_id").is_not_null())

        short = self._short_videos(raw_dir)
        # a room's category: its streamer's most played short-video category before valid_start
        cutoff = (self.dates[1] - dt.date(1970, 1, 1)).days * kl.DAY_MS - kl.LOCAL_OFFSET_MS
        top = (short.filter(pl.col("time") < cutoff, pl.col("category").is_not_null())
               .group_by("author_id", "category").agg(pl.len().alias("n"))
               .sort("author_id", "n", "category", descending=[False, True, False])
               .unique("author_id", keep="first", maintain_order=True)
               .select(pl.col("author_id").alias("streamer_id"), pl.col("category").alias("live_content_category")))
        rooms = (meta.select("live_id", pl.col("author_id").alias("streamer_id"), pl.lit(None, pl.String).alias("live_type"),
                             pl.col("timestamp").alias("start_timestamp"), "end_timestamp",
                             pl.lit(-1, pl.Int64).alias("live_name_id"))
                 .join(top, on="streamer_id", how="left", maintain_order="left"))
        authors = read_table(find(raw_dir, AUTHOR_FILE), ("author_id", "gender", "age_segment", "fans_user_num"),
                             {"author_id": pl.Int64}, aliases=ALIASES)
        require_non_null(find(raw_dir, AUTHOR_FILE), authors, ("author_id",))
        require_non_negative(find(raw_dir, AUTHOR_FILE), authors, ("author_id",))
        profile = {"gender": pl.col("gender"), "age": pl.col("age_segment"), "fans_user_num": pl.col("fans_user_num")}
        streamers = authors.unique("author_id", keep="first", maintain_order=True).select(
            pl.col("author_id").alias("streamer_id"),
            *((profile.get(c, pl.lit(None, pl.String))).alias(c) for c in STREAMER_PROFILE.values()))
        user_path = find(raw_dir, USER_SET_FILE)
        if user_path is not None:
            users = read_table(user_path, ("user_id",), {"user_id": pl.Int64}).drop_nulls().unique(maintain_order=True)
            require_non_negative(user_path, users, ("user_id",))
        else:
            users = clicks.select("user_id").unique(maintain_order=True)
        users = users.with_columns(pl.lit(None, pl.String).alias(c) for c in USER_PROFILE.values())
        events = {"click": (clicks, path), "negative": (shows, show_path), "comment": (comments, comment_path),
                  "like": (likes, like_path), "gift": (gifts, path)}
        return {"rooms": rooms, "events": events, "users": users, "streamers": streamers, "short": short,
                "unknown_rooms": {"like": unknown.height}}

    def _short_videos(self, raw_dir: Path) -> pl.DataFrame:
        """Short-video plays: photo_play.parquet events if present, else the photo_interaction.csv aggregate."""
        play = find(raw_dir, PHOTO_PLAY_FILE)
        if play is not None:
            photos = read_m3(play, ("user_id", "photo_id", "author_id", "enter_timestamp", "is_complete_play"),
                             ("user_id", "photo_id", "author_id"), ("is_complete_play",), "enter_timestamp")
            photos = photos.select("user_id", "photo_id", "author_id", pl.col("is_complete_play").alias("complete_play_cnt"),
                                   pl.col("timestamp").alias("time"))
        else:
            photos = read_photos(find(raw_dir, PHOTO_FILE))
        tag_path = raw_dir / PHOTO_TAG_FILE
        tags = read_table(tag_path, ("photo_id", "first_level_category_name"), {"photo_id": pl.Int64})
        require_non_null(tag_path, tags, ("photo_id",))
        require_non_negative(tag_path, tags, ("photo_id",))
        return short_videos(photos, tags.unique("photo_id", keep="first", maintain_order=True))

    # ------------------------------------------------------------------ content embeddings
    def _shipped_content(self, exposures: pl.DataFrame, views: pl.DataFrame, rooms: pl.DataFrame,
                         raw_dir: Path, items: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str, int]:
        """content_emb / view_content (the room's content as of each view), item_content (as of each live
        history item's click) and the streamer's long-term table."""
        live = items["item_kind"] == LIVE
        item_room = np.where(live, items["item_visit_room"] - 1, 0)
        mode = self.content_embeddings
        if mode == "auto":
            mode = "segment" if shards(raw_dir) else "room"
        if mode == "segment" and not shards(raw_dir):
            raise bad_input(raw_dir / SEGMENT_DIR, "has no parquet shards (data.content_embeddings=segment)",
                            "put the live_emb_128_ts_part*.parquet files there or pass data.content_embeddings=room")
        if mode == "room":
            path = find(raw_dir, ROOM_EMB_FILE)
            if path is None:
                raise bad_input(raw_dir / ROOM_EMB_FILE, "file not found (data.content_embeddings=room)",
                                f"put {ROOM_EMB_FILE} there or pass data.content_embeddings=segment")
            frame = read_parquet(path, ("live_id", "embedding"), {"live_id": pl.Int64},
                                 aliases={**ALIASES, "feature": "embedding"})
            frame = frame.unique("live_id", keep="first", maintain_order=True)
            vectors = embedding_matrix(path, frame, "embedding")
            rows = rooms.select("live_id").join(frame.select("live_id", pl.int_range(pl.len()).alias("row")),
                                                on="live_id", how="left", maintain_order="left")["row"]
            named = rooms.with_columns(live_name_id=rows.fill_null(-1).cast(pl.Int64))
            arrays = self._embeddings(exposures, named, np.arange(len(vectors)), vectors)
            arrays["view_content"] = arrays.pop("sample_content")[views["exposure"].to_numpy()]  # fixed per room
            arrays["item_content"] = np.where(live, arrays.pop("room_content")[item_room], 0).astype(np.int32)
            return arrays, mode, 0
        queries = pl.DataFrame({"room": np.r_[views["room"].to_numpy(), item_room[live]],
                                "time": np.r_[views["time"].to_numpy(), items["item_time"][live]]})
        arrays, n_segments = self._segment_content(exposures, queries, rooms, raw_dir)
        current = arrays.pop("current")
        arrays["view_content"] = current[:views.height]
        arrays["item_content"] = np.zeros(len(live), np.int32)
        arrays["item_content"][live] = current[views.height:]
        return arrays, "segment", n_segments

    def _segment_content(self, exposures: pl.DataFrame, queries: pl.DataFrame, rooms: pl.DataFrame,
                         raw_dir: Path) -> tuple[dict[str, np.ndarray], int]:
        """Per query (room, time: views read at their time, history items at their click) `current`, the
        row of the room's latest segment ended before that time (a row emitted later sees the room's later
        content); streamer_longterm_emb =
        the mean over the streamer's earlier rooms of each room's mean segment (KuaiLive's helper)."""
        wanted = rooms.join(exposures.select("streamer_id").unique(), on="streamer_id", how="semi").select("live_id", "room")
        parts = []
        for path in shards(raw_dir):
            frame = read_parquet(path, ("live_id", "feature_128", "timestamp"), {"live_id": pl.Int64},
                                 aliases={**ALIASES, "embedding": "feature_128", "feature": "feature_128"})
            frame = frame.with_columns(to_ms(path, frame, "timestamp").alias("timestamp"))
            part = frame.join(wanted, on="live_id", how="inner", maintain_order="left").drop("live_id")
            parts.append(part.with_columns(pl.lit(len(parts), pl.Int32).alias("shard")))
        segments = pl.concat(parts).with_row_index("item", offset=1)
        vectors = embedding_matrix(raw_dir / SEGMENT_DIR, segments, "feature_128", shards(raw_dir))
        dim = vectors.shape[1] if len(vectors) else 128
        # per-room mean segment -> the long-term table (rooms without segments have none)
        row, means = room_means(vectors, segments["room"].to_numpy(), rooms.height)
        arrays = self._embeddings(exposures, rooms.with_columns(live_name_id=pl.Series(row)),
                                  np.arange(len(means)), means)
        # the latest segment that ended strictly before each view's time
        order, start, end = last_before(segments.select("item", "room", pl.col("timestamp").alias("time")), ["room"],
                                        "time", queries)
        current = np.where(end > start, order[np.maximum(end - 1, 0)], 0)
        used = np.unique(current[current > 0])
        table = np.zeros((len(used) + 1, dim), np.float32)
        table[1:] = vectors[used - 1]
        arrays["content_emb"] = table
        arrays.pop("sample_content")
        arrays.pop("room_content")
        arrays["current"] = np.where(current > 0, np.searchsorted(used, current) + 1, 0).astype(np.int32)
        return arrays, segments.height


# ---------------------------------------------------------------------- reading helpers
def find(directory: Path, name: str) -> Path | None:
    """The file under its documented name, else its CSV / parquet variant, else None."""
    for candidate in (name, VARIANTS.get(name)):
        if candidate and (Path(directory) / candidate).is_file():
            return Path(directory) / candidate
    return None


def shards(directory: Path) -> list[Path]:
    folder = Path(directory) / SEGMENT_DIR
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def m3_errors(function, *args):
    """Run a KuaiLive step; its messages name KuaiLive's files, so name the M3 files instead."""
    try:
        return function(*args)
    except UserInputError as error:
        text = str(error).replace(f"in {kl.ROOM_FILE}", f"in {ROOM_META_FILE}")
        raise UserInputError(text.replace(f"/{kl.CLICK_FILE}", f"/{INTERACTION_FILE}")) from None


def read_parquet(path: Path, required: tuple[str, ...], dtypes: dict[str, pl.DataType],
                 aliases: dict[str, str] | None = None) -> pl.DataFrame:
    """`required` columns of a parquet file (renamed through `aliases`, ids cast to `dtypes`) + `line`
    (1-based row number)."""
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad file
        raise bad_input(path, f"is not a parquet file ({str(error).splitlines()[0]})", "re-download it")
    names = {(aliases or {}).get(n, n): n for n in schema}
    for column in required:
        if column not in names:
            raise bad_input(path, f"missing (columns are: {','.join(schema)})",
                            f"the file needs the columns {','.join(required)}", column)
    frame = pl.read_parquet(path, columns=[names[c] for c in required]).rename({names[c]: c for c in required})
    if frame.height == 0:
        raise bad_input(path, "has no rows", "re-download the file")
    frame = frame.with_row_index("line", offset=1).with_columns(pl.col("line").cast(pl.Int64))
    for column, dtype in dtypes.items():
        value = pl.col(column).cast(pl.String).str.strip_chars().cast(dtype, strict=False)
        bad = pl.col(column).is_not_null() & value.is_null()
        if frame.select(bad.any()).item():
            row = frame.filter(bad).row(0, named=True)
            kind = "an integer" if dtype.is_integer() else "a number"
            raise bad_input(path, f"row {row['line']} has '{row[column]}', which is not {kind}", "fix or drop that row",
                            column)
        frame = frame.with_columns(value.alias(column))
    return frame


def read_m3(path: Path, columns: tuple[str, ...], ids: tuple[str, ...], numbers: tuple[str, ...], time: str,
            optional_times: tuple[str, ...] = ()) -> pl.DataFrame:
    """A CSV or parquet table: ids Int64, `numbers` non-negative Int64, `time` -> `timestamp` (Unix ms),
    `optional_times` -> Unix ms (nulls kept); a `line` column for messages."""
    dtypes = {c: pl.Int64 for c in ids} | {c: pl.Float64 for c in numbers}
    if path.suffix == ".parquet":
        frame = read_parquet(path, columns, dtypes, ALIASES)
        frame = frame.with_columns(pl.col(c).cast(pl.Float64) for c in numbers)
    else:
        frame = read_table(path, columns, dtypes, aliases=ALIASES).with_row_index("line", offset=2)
        frame = frame.with_columns(pl.col("line").cast(pl.Int64))
    require_non_null(path, frame, (*ids, *numbers, time))
    require_non_negative(path, frame, ids, locate=line_of)  # rows carry their own line
    require_non_negative_numbers(path, frame, numbers, locate=line_of, below=2.0**53)  # exact; cast to Int64 below
    frame = frame.with_columns(pl.col(c).round(0).cast(pl.Int64) for c in numbers)
    for column in (time, *optional_times):
        frame = frame.with_columns(to_ms(path, frame, column).alias(column))
    return frame.rename({time: "timestamp"})


def line_of(frame: pl.DataFrame, bad: pl.Expr, column: str) -> tuple[int, str]:
    row = frame.filter(bad).row(0, named=True)
    return int(row["line"]), str(row[column])


def to_ms(path: Path, frame: pl.DataFrame, column: str) -> pl.Series:
    """Unix ms from integer ms, numeric text, datetime text or a parquet datetime (see the docstring)."""
    values = frame[column]
    if isinstance(values.dtype, pl.Datetime):
        if values.dtype.time_zone is None:
            values = values.dt.replace_time_zone(LOCAL_TZ)
        return values.dt.epoch("ms")
    if values.dtype == pl.String:
        text = pl.col(column).str.strip_chars()
        if frame.select(text.str.contains(r"^-?\d+$").or_(text.is_null()).all()).item():
            number = text.cast(pl.Int64, strict=False)
            overflow = text.is_not_null() & number.is_null()  # more digits than 64 bits hold
            if frame.select(overflow.any()).item():
                line, raw = line_of(frame, overflow, column)
                raise bad_input(path, f"line {line} has {raw.strip()}, beyond 64-bit integers: not Unix milliseconds",
                                "fix or drop that row", column)
            frame = frame.with_columns(number.alias(column))
        else:
            parsed = frame.select(parse_datetime(text).alias(column))[column]
            bad = values.is_not_null() & parsed.is_null()
            if bad.any():
                row = frame.filter(bad).row(0, named=True)
                line, raw = row["line"], row[column]
                raise bad_input(path, f"line {line} has '{raw}', which is neither Unix milliseconds nor a date-time "
                                "(yyyy-MM-dd HH:mm:ss[.SSS][Z|+hh:mm])", "fix or drop that row", column)
            return parsed
    elif not values.dtype.is_float() and not values.dtype.is_integer():
        raise bad_input(path, f"has type {values.dtype}, not a time", "re-download the file", column)
    bad = pl.col(column).is_not_null() & ((pl.col(column) < kl.MS_FLOOR) | (pl.col(column) >= kl.MS_CEIL))
    if frame.select(bad.any()).item():
        line, raw = line_of(frame, bad, column)
        number = float(raw)  # nan / inf from a float column too
        unit = ("is not a finite number" if not np.isfinite(number) else "looks like Unix seconds"
                if number < kl.MS_FLOOR else "looks like not Unix milliseconds")
        raise bad_input(path, f"line {line} has {raw}, which {unit}; KuaiLive-M3 times are Unix "
                        "milliseconds or date-times", "multiply second timestamps by 1000 (or re-extract the file)",
                        column)
    return frame[column].round(0).cast(pl.Int64) if values.dtype.is_float() else frame[column].cast(pl.Int64)


def parse_datetime(text: pl.Expr) -> pl.Expr:
    """Date-time text -> Unix ms: with Z / an offset exactly, naive as Asia/Shanghai local time."""
    text = text.str.replace("T", " ").str.replace(r"Z$", "+00:00")
    aware = text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f%z", time_unit="ms", strict=False)
    naive = pl.coalesce(text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ms", strict=False),
                        text.str.to_datetime("%Y-%m-%d", time_unit="ms", strict=False))
    return (pl.when(text.str.contains(r"[+-]\d\d:?\d\d$"))
            .then(aware.dt.convert_time_zone("UTC").dt.epoch("ms"))
            .otherwise(naive.dt.replace_time_zone(LOCAL_TZ).dt.epoch("ms")))


def embedding_matrix(path: Path, frame: pl.DataFrame, column: str, files: list[Path] | None = None) -> np.ndarray:
    """[n, D] float32 from a list / array column; every row the same length, finite. With `files`, the frame
    is several files' rows and its `shard` column says whose: a message names that file."""
    values = frame[column]
    if isinstance(values.dtype, (pl.List, pl.Array)) and not values.dtype.inner.is_numeric():
        raise bad_input(path, f"has type {values.dtype}, not a list of floats", "re-download the file", column)
    if frame.height == 0:
        return np.zeros((0, 128), np.float32)
    if isinstance(values.dtype, pl.List):
        lengths = values.list.len()
        if values.null_count() or lengths.n_unique() != 1:
            bad = int(np.flatnonzero((lengths != lengths.max()).fill_null(True).to_numpy())[0])
            where, row = _locate(path, frame, bad, files)
            raise bad_input(where, f"row {row} has an embedding of length {lengths[bad]}, not {lengths.max()}",
                            "re-download the file", column)
        values = values.list.to_array(int(lengths[0]))
    if not isinstance(values.dtype, pl.Array):
        raise bad_input(path, f"has type {values.dtype}, not a list of floats", "re-download the file", column)
    matrix = values.to_numpy().astype(np.float32)
    finite = np.isfinite(matrix).all(axis=1)  # float32: a float64 value beyond 3.4e38 is inf here too
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        where, row = _locate(path, frame, bad, files)
        value = matrix[bad][~np.isfinite(matrix[bad])][0]
        raise bad_input(where, f"row {row} has a non-finite embedding value ({value})", "re-download the file", column)
    return matrix


def _locate(path: Path, frame: pl.DataFrame, index: int, files: list[Path] | None) -> tuple[Path, int]:
    """(file, 1-based row) of frame row `index` (see `embedding_matrix`)."""
    where = files[int(frame["shard"][index])] if files else path
    return where, int(frame["line"][index]) if "line" in frame.columns else index + 1
