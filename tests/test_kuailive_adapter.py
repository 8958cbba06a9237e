"""KuaiLive adapter on hand-written files (official and pre-2025-07-29 layouts), the Moment and window
streams, the Cross sequences, bad input, and leakage / split checks on a tiny synthetic replica."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recbench.data.datamodule import RecDataModule
from recbench.data.kuailive import SEQUENCES, TASKS, KuaiLiveAdapter
from recbench.errors import UserInputError

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
LENGTHS = {"short": 4, "long": 3, "aid": 2, "livelong": 3, "mixed": 4}
TINY_REPLICA = {"n_users": 150, "n_streamers": 120, "n_authors": 150, "live_exposures_per_user": 40.0, "seed": 0}


def ms(day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    """Unix ms of a local (Asia/Shanghai) time in May 2025."""
    return int(dt.datetime(2025, 5, day, hour, minute, second, tzinfo=SHANGHAI).timestamp() * 1000)


# Rooms: (live_id, streamer, start, end, category, live_name_id, live_type). 9002 crosses midnight.
ROOMS = [(9001, 501, ms(6, 20), ms(6, 23), " Shop", 7, 1), (9002, 501, ms(21, 20), ms(22, 1), "chat", 3, 2),
         (9003, 502, ms(24, 10), ms(24, 12), "shop", -1, 1), (9004, 501, ms(24, 20), ms(24, 22), "shop", 7, 1)]
TITLES = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32)  # rows: live_name_id 3, 7 (sorted)
# (user, live_id, streamer, time, watch ms)
CLICKS = [(11, 9001, 501, ms(6, 20, 10), 600_000),    # c1 train: long view, comments, a late gift
          (12, 9001, 501, ms(6, 20, 12), 30_000),     # c2 train: short watch
          (11, 9002, 501, ms(21, 23, 30), 120_000),   # c3 valid: like after midnight
          (12, 9003, 502, ms(24, 10, 5), 5_000),      # c5 test
          (11, 9004, 501, ms(24, 20, 30), 90_000),    # c4 test
          (12, 9004, 501, ms(24, 20, 35), 600_000)]   # c6 test: its like carries a stale live_id
NEGATIVES = [(12, 9001, 501, ms(6, 20, 5)), (12, 9002, 501, ms(21, 21)), (11, 9003, 502, ms(24, 10, 20))]
COMMENTS = [(11, 9001, 501, ms(6, 20, 10, 45)), (11, 9001, 501, ms(6, 20, 12))]  # the repeat is at c2's time
LIKES = [(11, 9002, 501, ms(22, 0, 0, 30)), (12, 9001, 501, ms(24, 20, 40))]    # 9001 ended: window -> 9004
GIFTS = [(11, 9001, 501, ms(6, 20, 17), 5)]
# short videos: (user, photo, author, time, complete, category)
PHOTOS = [(11, 1, 501, ms(6, 20), 1, "shop"), (11, 2, 777, ms(6, 20, 11), 0, "chat"),
          (11, 3, 501, ms(24, 20, 30), 1, "shop")]


def write_files(folder: Path, old_names: bool = False, separator: str = ",", photos: str | None = None) -> Path:
    """The official layout (or the pre-2025-07-29 names, tab-separated), optionally with short videos."""
    folder.mkdir(parents=True, exist_ok=True)
    sid = "author_id" if old_names else "streamer_id"
    join = separator.join

    def write(name: str, header: tuple, rows: list) -> None:
        lines = [join(header)] + [join(map(str, row)) for row in rows]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    event = ("user_id", "live_id", sid, "timestamp")
    write("click.csv", (*event, "watch_live_time"), CLICKS)
    write("negative.csv", event, NEGATIVES)
    write("comment.csv", event, COMMENTS)
    write("like.csv", event, LIKES)
    write("gift.csv", (*event, "gift_price"), GIFTS)
    room_rows = []
    for live, streamer, start, end, category, title, kind in ROOMS:
        for day in sorted({dt.datetime.fromtimestamp(t / 1000, SHANGHAI).strftime("%Y%m%d") for t in (start, end - 1)}):
            room_rows.append((day, live, streamer, kind, start, end, category, title))
    write("mapped_room.csv" if old_names else "room.csv",
          ("p_date", "live_id", sid, "live_type", "start_timestamp", "end_timestamp", "live_content_category",
           "live_name_id"), room_rows)
    write("user.csv", ("user_id", "age", "gender", "device_brand", "device_price", "fans_num", "follow_num",
                       "accu_watch_live_cnt", "is_live_streamer"),
          [(11, "18-23", "F", "OPPO", "1000-2000", "0-10", "10-100", "100-1000", 0),
           (12, "24-30", "M", "", "2000-3000", "0-10", "0-10", "0-100", 0)])
    write("author.csv" if old_names else "streamer.csv",
          (sid, "gender", "age", "live_operation_tag", "fans_user_num", "accu_live_cnt"),
          [(s, "M", "24-30", "Chat", "10000-100000", "100-1000") for s in (501, 502, 503)])
    np.save(folder / ("title_embeddings_pca128.npy" if old_names else "title_embeddings.npy"), TITLES)
    if photos:
        day = lambda t: dt.datetime.fromtimestamp(t / 1000, SHANGHAI).strftime("%Y%m%d")  # noqa: E731
        time_column = ("timestamp",) if photos == "timestamp" else ("p_date",)
        write("photo_interaction.csv", ("user_id", "photo_id", "author_id", "show_cnt", "complete_play_cnt",
                                        "play_progress", *time_column),
              [(u, p, a, 1, c, 1.0 if c else 0.3, t if photos == "timestamp" else day(t))
               for u, p, a, t, c, _ in PHOTOS])
        write("photo_tag.csv", ("photo_id", "first_level_category_name"), [(p, cat) for _, p, _, _, _, cat in PHOTOS])
    return folder


def adapter(raw: Path, tmp: Path, source: str = "raw", **overrides) -> KuaiLiveAdapter:
    settings = dict(source=source, raw_dir=str(raw), cache_dir=str(tmp / "cache"), replica_dir=str(tmp / "syn"),
                    stream="moment", long_view_seconds=60, moment_seconds=30, fast_window_minutes=5,
                    slow_window_minutes=60, counter_minutes=[5, 30], sequence_lengths=LENGTHS,
                    unmatched_events="error", train_start="2025-05-05", valid_start="2025-05-20",
                    test_start="2025-05-23", test_end="2025-05-26", replica=TINY_REPLICA)
    settings.update(overrides)
    return KuaiLiveAdapter(**settings)


def batch_of(kuailive: KuaiLiveAdapter, prepared, split: str) -> dict[str, torch.Tensor]:
    tables = {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}
    return kuailive.assemble(tables, split, torch.arange(len(prepared.arrays[f"{split}_rows"])))


def labels(batch: dict[str, torch.Tensor], key: str = "label") -> list[list[int]]:
    return torch.stack([batch[f"{key}_{t}"] for t in TASKS], 1).int().tolist()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("official")
    kuailive = adapter(write_files(tmp / "raw"), tmp)
    return kuailive, kuailive.prepare()


# ---------------------------------------------------------------------------------- layouts, labels
def test_exposures_splits_and_labels(official):
    kuailive, prepared = official
    assert prepared.meta["splits"] == {"train": 3, "valid": 2, "test": 4}
    valid, test = batch_of(kuailive, prepared, "valid"), batch_of(kuailive, prepared, "test")
    # exposures in time order: valid = n3, c3; test = c5, n2, c4, c6 (the stale-id like lands in 9004)
    assert labels(valid) == [[0, 0, 0, 0, 0], [1, 1, 0, 1, 0]]
    assert labels(test) == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 1, 0]]
    assert labels(test, "mask") == [[1] * 5] * 4 and labels(test, "pu") == [[0] * 5] * 4
    stats = prepared.meta["stats"]
    assert stats["rooms"] == 4 and stats["clicks"] == 6 and stats["exposures"] == 9
    # ids: vocabularies from training only (0 padding, 1 unseen)
    assert valid["user"].tolist() == [3, 2] and test["live"].tolist() == [1, 1, 1, 1]
    assert test["streamer"].tolist() == [1, 1, 2, 2]  # 502 never trained on
    assert test["category"].tolist() == [2, 2, 2, 2] and valid["category"].tolist() == [1, 1]  # " Shop" == "shop"
    assert valid["device_brand"].tolist() == [0, 2]  # user 12 has no device brand: missing -> 0
    spec = prepared.meta["spec"]
    assert spec["tasks"] == list(TASKS) and spec["sequences"] == list(SEQUENCES)
    assert spec["cardinalities"]["author"] == spec["cardinalities"]["streamer"] and spec["cardinalities"]["kind"] == 3


def emitted(prepared) -> list[tuple[int, float]]:
    """(exposure, seconds from the exposure to the emit time) of each training row, in stream order."""
    a = prepared.arrays
    exposure = a["view_exposure"][a["train_rows"]]
    return [(int(e), (int(t) - int(a["sample_time"][e])) / 1000) for e, t in zip(exposure, a["train_time"])]


def test_moment_stream_reports_first_positives_then_exit(official):
    kuailive, prepared = official
    train = batch_of(kuailive, prepared, "train")
    # 30-s ticks on the Unix-epoch grid, a report in the first tick strictly after its label is known:
    # n1 (20:05:00, no click) at 20:05:30; c1 (20:10:00): click at 20:10:30, first comment (20:10:45) at
    # 20:11:00, long view (60 s) at 20:11:30, gift (20:17:00) at 20:17:30, the remaining like (0) at the
    # exit (20:20:00) -> 20:20:30; c2 (20:12:00): click at 20:12:30, the rest at its exit (20:12:30) -> 20:13:00
    assert emitted(prepared) == [(0, 30), (1, 30), (1, 60), (1, 90), (2, 30), (2, 60), (1, 450), (1, 630)]
    assert labels(train) == [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0],
                             [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert labels(train, "mask") == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0],
                                     [1, 0, 0, 0, 0], [0, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]]
    assert not any(map(any, labels(train, "pu")))
    # every task is trained exactly once per exposure (first-only: the repeated comment is not reported)
    mask = np.array(labels(train, "mask"))
    exposure = [e for e, _ in emitted(prepared)]
    assert np.bincount(exposure, weights=mask.sum(1)).tolist() == [5, 5, 5]
    assert (np.diff(prepared.arrays["train_time"]) >= 0).all()  # the stream is in emit-time order


def test_the_tick_changes_the_rows_and_their_features(tmp_path):
    raw = write_files(tmp_path / "raw")
    fast = adapter(raw, tmp_path, moment_seconds=30).prepare()
    slow = adapter(raw, tmp_path, moment_seconds=3600).prepare()
    # 1-h ticks (on the hour): n1, c1's click, comment and long view and c2 all report at 21:00;
    # c1's gift (20:17) and exit (20:20) too: one row per (exposure, tick) -> three rows
    assert emitted(slow) == [(0, 3300), (1, 3000), (2, 2880)]
    slow_batch = batch_of(adapter(raw, tmp_path, moment_seconds=3600), slow, "train")
    assert labels(slow_batch) == [[0, 0, 0, 0, 0], [1, 1, 1, 0, 1], [1, 0, 0, 0, 0]]
    assert labels(slow_batch, "mask") == [[1] * 5] * 3
    fast_batch = batch_of(adapter(raw, tmp_path), fast, "train")
    # the features are read at the emit time: 21:00 is an hour later (hour 21) and the room is 60 min old
    assert slow_batch["hour"].tolist() == [21 + 2] * 3 and fast_batch["hour"].tolist() == [20 + 2] * 8
    assert slow_batch["live_age"].tolist() == [7 + 2] * 3  # 60 min: past 7 edges (1, 5, ..., 60 min)
    assert fast_batch["live_age"][:2].tolist() == [2 + 2, 3 + 2]  # 5.5 min and 10.5 min old
    # at 21:00 the last 5 minutes of room 9001 are empty; c2's 30-minute window (20:30-21:00) too
    assert slow_batch["room_shows_5m"].tolist() == [2, 2, 2] and slow_batch["room_clicks_30m"].tolist() == [2, 2, 2]
    # valid / test rows are read at the exposure whatever the tick
    for key in ("valid_rows", "test_rows", "progressive_rows"):
        np.testing.assert_array_equal(fast.arrays["view_time"][fast.arrays[key]],
                                      slow.arrays["view_time"][slow.arrays[key]])


def test_reports_at_or_after_the_split_end_are_not_trained_on(tmp_path):
    raw = write_files(tmp_path / "raw")
    # training ends at local midnight of the 7th = 16:00 UTC; 4-hour ticks (00, 04, ..., 16 UTC) put every
    # report of the 20:05-20:20 local exposures at 16:00 UTC: not known during training, so no row
    late = adapter(raw, tmp_path, moment_seconds=4 * 3600, valid_start="2025-05-07").prepare()
    assert len(late.arrays["train_moment_rows"]) == 0 and len(late.arrays["progressive_rows"]) == 3
    assert len(late.arrays["train_window_rows"]) == 4  # the window stream's reports end by 21:20 local


def test_window_stream_fast_rows_and_pu_slow_rows(tmp_path):
    kuailive = adapter(write_files(tmp_path / "raw"), tmp_path, stream="window")
    prepared = kuailive.prepare()
    train = batch_of(kuailive, prepared, "train")
    # a fast row 5 minutes after each exposure; c1's gift comes after 7 minutes: missing from its fast
    # row, re-reported 1 hour after the exposure by the slow window with PU
    assert emitted(prepared) == [(0, 300), (1, 300), (2, 300), (1, 3600)]
    assert labels(train) == [[0, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    assert labels(train, "mask") == [[1] * 5, [1] * 5, [1] * 5, [0, 0, 0, 0, 1]]
    assert labels(train, "pu") == [[0] * 5, [0] * 5, [0] * 5, [0, 0, 0, 0, 1]]
    # both streams share one cache and the same valid / test rows
    moment = adapter(tmp_path / "raw", tmp_path, stream="moment").prepare()
    assert moment.meta["fingerprint"] == prepared.meta["fingerprint"]
    assert len(list((tmp_path / "cache").iterdir())) == 1
    for key in ("valid_rows", "valid_label", "test_rows", "test_label"):
        np.testing.assert_array_equal(moment.arrays[key], prepared.arrays[key])


def test_context_counts_only_the_past_of_the_room_and_never_the_rows_own_visit(official):
    kuailive, prepared = official
    train = batch_of(kuailive, prepared, "train")
    counters = lambda row, m: [train[f"room_{w}_{m}m"][row].item() for w in ("shows", "clicks", "engage")]  # noqa: E731
    # n1's row (20:05:30) would count n1 itself: its own exposure is left out -> all 0 (bucket 0 + 2)
    assert counters(0, 5) == [2, 2, 2]
    # c2's click row (20:12:30): c1 (20:10) and both of user 11's comments (20:10:45, 20:12) in the last 5 min,
    # not c2 itself nor n1 (20:05); 2 comments -> log2 bucket 1
    assert counters(4, 5) == [3, 3, 3]
    # c1's gift row (20:17:30), 30 min: n1 and c2 count (2 shows, 1 click: both log2 bucket 1), c1's own
    # click, comments and gift do not (engagements 0)
    assert counters(6, 30) == [3, 3, 2]
    assert train["hour"][-1].item() == 20 + 2 and train["live_age"][-1].item() == 4 + 2  # 20:20:30: 20.5 min, past 4 edges
    assert train["group"].tolist() == [2, 1, 1, 1, 2, 2, 1, 1]
    # valid / test rows are read at the exposure: c4 (test, 20:30 on the 24th) sees no one in room 9004 yet
    test = batch_of(kuailive, prepared, "test")
    assert [test[f"room_{w}_5m"][2].item() for w in ("shows", "clicks", "engage")] == [2, 2, 2]


def test_content_and_streamer_longterm_embeddings(official):
    kuailive, prepared = official
    valid, test = batch_of(kuailive, prepared, "valid"), batch_of(kuailive, prepared, "test")
    assert valid["live_content_emb"][1].tolist() == [1, 0, 0, 0]       # 9002: title 3
    assert test["live_content_emb"][0].tolist() == [0, 0, 0, 0]        # 9003: no title (-1)
    assert test["live_content_emb"][2].tolist() == [0, 1, 0, 0]        # 9004: title 7
    assert valid["streamer_longterm_emb"][1].tolist() == [0, 1, 0, 0]  # 501's earlier room 9001
    assert test["streamer_longterm_emb"][2].tolist() == [0.5, 0.5, 0, 0]  # 9001 and 9002
    assert test["streamer_longterm_emb"][0].tolist() == [0, 0, 0, 0]   # 502 has no earlier room
    assert prepared.meta["spec"]["content_dim"] == 4


def test_live_sequences_without_short_videos(official):
    kuailive, prepared = official
    test = batch_of(kuailive, prepared, "test")
    for name in ("short", "long", "aid"):  # plain KuaiLive has no short videos: empty, masked
        assert not test[f"seq_{name}_mask"].any() and not test[f"seq_{name}_author"].any()
    # c4 (user 11, shop room of 501): the earlier shop click c1; its long views c1, c3, newest last
    assert test["seq_livelong_mask"][2].tolist() == [False, False, True]
    assert test["seq_livelong_author"][2].tolist() == [0, 0, 2] and test["seq_livelong_kind"][2].tolist() == [0, 0, 2]
    assert test["seq_livelong_category"][2].tolist() == [0, 0, 2]
    assert test["seq_mixed_mask"][2].tolist() == [False, False, True, True]
    assert test["seq_mixed_category"][2].tolist() == [0, 0, 2, 1]  # shop, then "chat" (unseen in training)
    # c6 (user 12): shop clicks c2 and c5; no long view at all
    assert test["seq_livelong_mask"][3].tolist() == [False, True, True] and not test["seq_mixed_mask"][3].any()


def test_old_names_and_tabs_give_identical_arrays(tmp_path):
    official = adapter(write_files(tmp_path / "doc"), tmp_path / "a").prepare()
    old = adapter(write_files(tmp_path / "old", old_names=True, separator="\t"), tmp_path / "b").prepare()
    assert official.arrays.keys() == old.arrays.keys()
    for key in official.arrays:
        np.testing.assert_array_equal(official.arrays[key], old.arrays[key], err_msg=key)


def test_short_video_sequences(tmp_path):
    kuailive = adapter(write_files(tmp_path / "raw", photos="timestamp"), tmp_path)
    prepared = kuailive.prepare()
    train, test = batch_of(kuailive, prepared, "train"), batch_of(kuailive, prepared, "test")
    streamer = {501: 2, 777: 3}  # short-video authors played before valid_start share the streamer vocabulary
    # c1 (user 11, May 6 20:10): p1 only (p2 comes later)
    c1 = 1
    for name in ("short", "long", "aid"):
        assert train[f"seq_{name}_mask"][c1].tolist()[-2:] == [False, True]
        assert train[f"seq_{name}_author"][c1][-1].item() == streamer[501]
        assert train[f"seq_{name}_kind"][c1][-1].item() == 1
    assert train["seq_mixed_kind"][c1].tolist() == [0, 0, 0, 1]
    # c4 (user 11, May 24 20:30): p1, p2 (p3 is AT the exposure time: excluded); category search keeps
    # the shop video; aid the 501 video; mixed = p1 (complete play), then live long views c1, c3
    c4 = 2
    assert test["seq_short_author"][c4].tolist() == [0, 0, streamer[501], streamer[777]]
    assert test["seq_long_mask"][c4].tolist() == [False, False, True]
    assert test["seq_aid_mask"][c4].tolist() == [False, True]
    assert test["seq_mixed_kind"][c4].tolist() == [0, 1, 2, 2]
    assert prepared.meta["stats"]["short_video_rows"] == 3
    # a daily aggregate (p_date only) is usable from the next local midnight: nothing on May 6 itself
    daily = adapter(write_files(tmp_path / "daily", photos="p_date"), tmp_path / "d")
    prepared = daily.prepare()
    train, test = batch_of(daily, prepared, "train"), batch_of(daily, prepared, "test")
    assert not train["seq_short_mask"].any()
    assert test["seq_short_mask"][c4].tolist() == [False, False, True, True]  # p1, p2; May 24 is not over


# ---------------------------------------------------------------------------------- bad input
def bad(tmp_path: Path, file: str, edit, **overrides) -> str:
    raw = write_files(tmp_path / "raw")
    edit(raw / file)
    with pytest.raises(UserInputError) as info:
        adapter(raw, tmp_path, **overrides).prepare()
    message = str(info.value)
    assert "\n" not in message and "Fix:" in message and file in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    return message


def append(line: str):
    return lambda path: path.write_text(path.read_text() + line + "\n")


def test_event_outside_every_room_window(tmp_path):
    message = bad(tmp_path, "comment.csv", append(f"11,9001,501,{ms(7, 12)}"))
    assert "outside" in message and "line 4" in message and "unmatched_events" in message
    prepared = adapter(tmp_path / "raw", tmp_path, unmatched_events="drop").prepare()
    assert prepared.meta["stats"]["dropped_outside_windows"]["comment"] == 1


def test_unknown_streamer(tmp_path):
    message = bad(tmp_path, "click.csv", append(f"11,9001,999,{ms(6, 20, 30)},1000"))
    assert "999" in message and "streamer.csv" in message and "streamer_id" in message


def test_missing_column(tmp_path):
    message = bad(tmp_path, "gift.csv", lambda p: p.write_text(p.read_text().replace(",gift_price", ",price")))
    assert "gift_price" in message


def test_second_timestamps(tmp_path):
    def to_seconds(path: Path) -> None:
        frame = pl.read_csv(path)
        frame.with_columns(pl.col("timestamp") // 1000).write_csv(path)

    message = bad(tmp_path, "click.csv", to_seconds)
    assert "seconds" in message and "line 2" in message and "timestamp" in message


def test_title_rows_must_match_room_titles(tmp_path):
    message = bad(tmp_path, "title_embeddings.npy", lambda p: np.save(p, np.zeros((3, 4), np.float32)))
    assert "3 rows" in message and "2 distinct live_name_id" in message


@pytest.mark.parametrize("photos,file,old,new,column", [
    (None, "click.csv", ",600000\n", ",1e300\n", "watch_live_time"),  # was a polars cast traceback
    (None, "gift.csv", ",5\n", ",1e300\n", "gift_price"),
    (None, "room.csv", ",7\n", ",-5\n", "live_name_id"),  # -1 = no title; was read as no title
    ("p_date", "photo_interaction.csv", "\n11,1,501,1,1,", "\n11,1,501,1,nan,", "complete_play_cnt"),  # NaN > 0
    ("p_date", "photo_interaction.csv", "\n11,1,501,", "\n-11,1,501,", "user_id"),
    ("p_date", "photo_interaction.csv", ",20250506\n", ",19000101\n", "p_date"),  # outside 1973..5138
    ("p_date", "photo_tag.csv", "\n1,", "\n-1,", "photo_id"),
])
def test_out_of_range_values_name_their_line(tmp_path, photos, file, old, new, column):
    raw = write_files(tmp_path / "raw", photos=photos)
    text = (raw / file).read_text()
    assert old in text
    (raw / file).write_text(text.replace(old, new, 1))
    with pytest.raises(UserInputError) as info:
        adapter(raw, tmp_path).prepare()
    message = str(info.value)
    assert "\n" not in message and "Fix:" in message and str(raw / file) in message
    assert f"column '{column}'" in message and "line 2" in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_missing_file_and_bad_options(tmp_path):
    raw = write_files(tmp_path / "raw")
    (raw / "gift.csv").unlink()
    with pytest.raises(UserInputError, match="gift.csv"):
        adapter(raw, tmp_path).prepare()
    with pytest.raises(UserInputError, match="data.stream"):
        adapter(raw, tmp_path, stream="fast")
    with pytest.raises(UserInputError, match="sequence_lengths"):
        adapter(raw, tmp_path, sequence_lengths={"short": 3})


# ---------------------------------------------------------------------------------- replica: leakage, splits
@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replica")
    datamodule = RecDataModule(adapter(tmp / "raw", tmp, source="synthetic", sequence_lengths=dict(
        short=20, long=10, aid=5, livelong=10, mixed=10)), batch_size=256, eval_batch_size=1024, seed=0)
    datamodule.prepare()
    return datamodule


def test_no_feature_reads_an_event_at_or_after_the_rows_read_time_nor_its_own_visit(replica):
    """Every row set (training rows at their emit time, evaluated rows at their exposure): sequence items
    are known strictly before the row's read time and never its own visit; room counters recomputed
    from the files for a sample of rows match."""
    kuailive, tables = replica.adapter, replica.tables
    np.testing.assert_array_equal(replica.prepared.arrays["sample_time"], exposure_times(replica))
    for split in ("train", "progressive", "valid", "test"):
        view = tables[f"{split}_rows"]
        now, exposure = tables["view_time"][view][:, None], tables["view_exposure"][view]
        assert (now[:, 0] >= tables["sample_time"][exposure]).all()
        for name in SEQUENCES:
            item, valid = kuailive.sequence_items(tables, name, view)
            when = tables["item_time"][item]
            if name == "mixed":  # a live long view is known once the watch passes the threshold
                when = when + torch.where(tables["item_kind"][item] == 2, kuailive.long_view_ms, 0)
            own = ((tables["item_visit_room"][item] == tables["sample_visit_room"][exposure][:, None])
                   & (tables["item_time"][item] >= tables["sample_time"][exposure][:, None]))
            assert valid.any() and (when < now)[valid].all() and not own[valid].any(), (split, name)
            assert not item[~valid].any()
    check_counters_from_the_files(replica, "train", sample=300)


def check_counters_from_the_files(datamodule, split: str, sample: int) -> None:
    """room_<what>_<m>m of `sample` rows against a count over the raw files: events of the room in
    [t - m, t), less the row's own user's events in that room from the exposure on."""
    files, arrays = Path(datamodule.prepared.meta["files_dir"]), datamodule.prepared.arrays
    read = lambda name: pl.read_csv(files / name).select("user_id", "live_id", "timestamp")  # noqa: E731
    sources = {"shows": pl.concat([read("click.csv"), read("negative.csv")]), "clicks": read("click.csv"),
               "engage": pl.concat([read(f"{k}.csv") for k in ("comment", "like", "gift")])}
    rows = np.linspace(0, len(arrays[f"{split}_rows"]) - 1, sample).astype(np.int64)
    batch = datamodule.adapter.assemble(datamodule.tables, split, torch.from_numpy(rows))
    view = arrays[f"{split}_rows"][rows]
    exposure = arrays["view_exposure"][view]
    queries = pl.DataFrame({"t": arrays["view_time"][view], "exposed": arrays["sample_time"][exposure],
                            "row": np.arange(sample)})
    # the user and room of each sampled exposure, looked up in the files by its time (where unique)
    keyed = sources["shows"].rename({"timestamp": "exposed"}).unique(["exposed"], keep="none")
    queries = queries.join(keyed, on="exposed", how="inner")
    assert queries.height > sample // 2  # exposures with a unique time identify their user and room
    for minutes in datamodule.adapter.counter_minutes:
        for what, events in sources.items():
            joined = queries.join(events.rename({"user_id": "event_user", "timestamp": "when"}), on="live_id")
            inside = (pl.col("when") >= pl.col("t") - minutes * 60_000) & (pl.col("when") < pl.col("t"))
            own = (pl.col("event_user") == pl.col("user_id")) & (pl.col("when") >= pl.col("exposed"))
            counts = (queries.select("row").join(joined.filter(inside & ~own).group_by("row").len(), on="row",
                                                 how="left").fill_null(0).sort("row"))
            expected = np.minimum(np.floor(np.log2(counts["len"].to_numpy() + 1.0)), 8) + 2
            got = batch[f"room_{what}_{minutes}m"].numpy()[counts["row"].to_numpy()]
            np.testing.assert_array_equal(got, expected, err_msg=f"{what} {minutes}m")


def exposure_times(datamodule) -> np.ndarray:
    """Exposure times recomputed from the files (the adapter stores no times in the batches)."""
    files = Path(datamodule.prepared.meta["files_dir"])
    frames = [pl.read_csv(files / "click.csv").drop("watch_live_time").with_columns(click=pl.lit(1)),
              pl.read_csv(files / "negative.csv").with_columns(click=pl.lit(0))]
    rooms = pl.read_csv(files / "room.csv").select("live_id").unique().sort("live_id").with_row_index("room")
    exposures = pl.concat(frames).join(rooms, on="live_id")
    day = (pl.col("timestamp") + 8 * 3_600_000) // 86_400_000
    exposures = exposures.filter(day >= (dt.date(2025, 5, 5) - dt.date(1970, 1, 1)).days,
                                 day < (dt.date(2025, 5, 26) - dt.date(1970, 1, 1)).days)
    return np.sort(exposures["timestamp"].to_numpy())  # the adapter orders exposures by time


def test_valid_and_test_are_disjoint_later_days(replica):
    arrays = replica.prepared.arrays
    assert not np.intersect1d(arrays["valid_rows"], arrays["test_rows"]).size
    assert not np.intersect1d(arrays["train_rows"], arrays["valid_rows"]).size
    time = arrays["view_time"]  # training rows: emit times, known before validation starts
    assert time[arrays["train_rows"]].max() < time[arrays["valid_rows"]].min()
    assert time[arrays["valid_rows"]].max() < time[arrays["test_rows"]].min()


def test_batches_follow_the_spec(replica):
    spec = replica.spec
    batch = next(iter(replica.train_dataloader()))
    cards = spec["cardinalities"]
    for field in spec["user_fields"] + spec["item_fields"] + spec["context_fields"]:
        assert batch[field].dtype == torch.int64 and 0 <= batch[field].min() and batch[field].max() < cards[field]
    assert {"user", "age", "gender"} <= set(spec["user_fields"])
    assert {"live", "streamer", "category", "live_type"} <= set(spec["item_fields"])
    for name in spec["sequences"]:
        length = spec["sequence_lengths"][name]
        assert batch[f"seq_{name}_author"].shape == (256, length) and batch[f"seq_{name}_mask"].dtype == torch.bool
        assert batch[f"seq_{name}_author"].max() < cards["author"]
        assert batch[f"seq_{name}_category"].max() < cards["category"]
        assert set(batch[f"seq_{name}_kind"].unique().tolist()) <= {0, 1, 2}
    assert batch["seq_short_mask"].any() and batch["seq_aid_mask"].any()
    assert batch["live_content_emb"].shape == (256, spec["content_dim"]) == batch["streamer_longterm_emb"].shape
    for task in spec["tasks"]:
        for key in ("label", "mask", "pu"):
            assert batch[f"{key}_{task}"].dtype == torch.float32
    # no label among the features; non-click tasks are 0 on unclicked exposures
    assert not {k for k in batch if k.startswith(("label", "mask", "pu"))} & set(cards)
    test = next(iter(replica.test_dataloader()))
    for task in spec["tasks"][1:]:
        assert (test[f"label_{task}"] <= test["label_click"]).all()
