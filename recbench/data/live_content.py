"""What a live room shows at a moment: per-segment content served causally, and the text stage's corpus
and behaviour tasks for it (LARM's stage 1).

LARM (arXiv 2504.05217) embeds each 30-second window of a live stream with a multimodal LLM; the
embedding of a window exists once the window is over. Here a room's content comes as SEGMENTS (a start
time and what the room shows from then on: a text on the KuaiLive replica's `segment_text.csv`). The
encoder runs on a grid of `segment_seconds` on the Unix epoch: at a read time t the latest window that
has been embedded ended at the tick tau = floor(t / W) * W, and it shows the segment that was on just
before tau, i.e. the room's latest segment that STARTED strictly before tau. So a segment that starts
after the read time is never served, nor one that starts in the current, unfinished window; a shorter W
follows the room more closely.

Long-term content (LARM's "long-term pooling of historical embeddings"): the mean over the streamer's
earlier rooms of each room's mean served content (`streamer_longterm`, as for titles).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recbench.data.readers import read_table, require_non_negative, require_non_null
from recbench.errors import bad_input

SEGMENT_TEXT_COLUMNS = ("live_id", "timestamp", "text")


def read_segment_texts(path: Path, rooms: pl.DataFrame) -> pl.DataFrame:
    """segment_text.csv -> (room, start, text) of the rooms in `rooms` (segments of other rooms are
    not needed); timestamps must be Unix ms."""
    from recbench.data.kuailive import check_ms  # one ms check for every KuaiLive file

    frame = read_table(path, SEGMENT_TEXT_COLUMNS, {"live_id": pl.Int64, "timestamp": pl.Int64, "text": pl.String})
    require_non_null(path, frame, SEGMENT_TEXT_COLUMNS)
    require_non_negative(path, frame, ("live_id",))
    check_ms(path, frame, "timestamp")
    empty = frame["text"].str.strip_chars().str.len_chars() == 0
    if empty.any():
        line = int(np.flatnonzero(empty.to_numpy())[0]) + 2
        raise bad_input(path, f"line {line}: empty text", "give every segment a text or drop its row", "text")
    # rooms are merged to one row per live_id; a segment outside its room's window shows nothing anyone saw
    placed = (frame.join(rooms.select("room", "live_id", pl.col("start").alias("room_start"), "end"), on="live_id")
              .filter(pl.col("timestamp") < pl.col("end")))
    return (placed.select("room", pl.max_horizontal("timestamp", "room_start").alias("start"),
                          pl.col("text").str.strip_chars())
            .sort("room", "start"))


def serve(segments: pl.DataFrame, room: np.ndarray, time: np.ndarray, tick_ms: int) -> np.ndarray:
    """Per query (room, read time), the row in `segments` (room, start; 1-based, 0 = none) of the latest
    segment of that room that started strictly before the query's tick floor(time / tick) * tick."""
    if not len(room):
        return np.zeros(0, np.int64)
    from recbench.data.kuailive import last_before

    items = segments.select(pl.int_range(1, pl.len() + 1).alias("item"), "room", pl.col("start").alias("time"))
    tick = (np.asarray(time, np.int64) // tick_ms) * tick_ms
    queries = pl.DataFrame({"room": np.asarray(room, np.int64), "time": tick})
    order, first, end = last_before(items, ["room"], "time", queries)
    return np.where(end > first, order[np.maximum(end - 1, 0)], 0).astype(np.int64)


def dense_rows(served: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct served segment rows (> 0) and each input re-indexed to them (1-based, 0 = none)."""
    used = np.unique(np.concatenate([s[s > 0] for s in served]) if served else np.zeros(0, np.int64))
    return used, [np.where(s > 0, np.searchsorted(used, s) + 1, 0).astype(np.int32) for s in served]


def room_means(vectors: np.ndarray, row_room: np.ndarray, n_rooms: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector per room over its content rows: (per-room row index, -1 = none; the means)."""
    with_rows = np.unique(row_room)
    sums = np.zeros((len(with_rows), vectors.shape[1]))
    slot = np.searchsorted(with_rows, row_room)
    np.add.at(sums, slot, vectors)
    means = (sums / np.maximum(np.bincount(slot, minlength=len(with_rows)), 1)[:, None]).astype(np.float32)
    row = np.full(n_rooms, -1, np.int64)
    row[with_rows] = np.arange(len(with_rows))
    return row, means
