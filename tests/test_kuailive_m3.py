"""KuaiLive-M3 adapter: hand-written files in the M3 layout -> exact labels, streams, sequences and content;
the synthetic replica through the adapter; bad input; one end-to-end `python -m recbench` run."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recbench.data.kuailive import SEQUENCES, TASKS
from recbench.data.kuailive_m3 import KuaiLiveM3Adapter
from recbench.data.kuailive_m3_replica import (
    KuaiLiveM3ReplicaConfig,
    files,
    write_kuailive_m3_replica,
)
from recbench.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
LENGTHS = {"short": 4, "long": 3, "aid": 2, "livelong": 3, "mixed": 4}
CLI_REPLICA = {"n_users": 60, "n_streamers": 60, "n_authors": 80, "live_exposures_per_user": 20.0, "seed": 0}
TINY = {"n_users": 100, "n_streamers": 80, "n_authors": 120, "live_exposures_per_user": 25.0, "seed": 0}


def ms(day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    return int(dt.datetime(2025, 5, day, hour, minute, second, tzinfo=SHANGHAI).timestamp() * 1000)


def text(t: int) -> str:
    """Naive local date-time string, as the official loader's pandas parse_dates reads them."""
    return dt.datetime.fromtimestamp(t / 1000, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def utc(t: int) -> str:
    return dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def local(values: list[int]) -> pl.Series:
    return pl.Series(values).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Shanghai")


# rooms: live_id, author, start, end (None: not ended)
ROOMS = [(9001, 501, ms(6, 20), ms(6, 23)), (9002, 501, ms(21, 20), ms(21, 22)), (9003, 502, ms(24, 10), None),
         (9004, 501, ms(24, 20), ms(24, 22))]
# sessions: user, live_id, author, start, play_duration ms, send_gift_cnt
SESSIONS = [(11, 9001, 501, ms(6, 20, 10), 600_000, 1),   # s1 train: long view, comment, gift at its end
            (12, 9001, 501, ms(6, 20, 12), 30_000, 0),    # s2 train
            (11, 9002, 501, ms(21, 20, 30), 120_000, 0),  # s3 valid: like
            (11, 9004, 501, ms(24, 20, 30), 90_000, 0),   # s4 test
            (12, 9003, 502, ms(24, 10, 5), 5_000, 0)]     # s5 test (room without end)
SHOWS = [(9001, 12, 501, ms(6, 20, 5)), (9003, 11, 502, ms(24, 10, 20))]
COMMENTS = [(9001, 11, 501, "好看", ms(6, 20, 10, 45))]
LIKES = [(11, 9002, utc(ms(21, 20, 31)))]
# short-video plays: user, photo, author, time, complete, category
PLAYS = [(11, 1, 501, ms(6, 20), 1, "shop"), (11, 2, 777, ms(6, 20, 11), 0, "chat"),
         (11, 3, 501, ms(24, 20, 30), 1, "shop"), (12, 4, 502, ms(7, 10), 0, "game")]
# segments: live_stream_id (str), end time, 4-d embedding
SEGMENTS = [("9004", ms(24, 20, 20), [1, 0, 0, 0]), ("9004", ms(24, 20, 30), [0, 1, 0, 0]),
            ("9001", ms(6, 20, 30), [0, 0, 1, 0]), ("9002", ms(21, 20, 10), [0, 0, 0, 1])]


def write_csv(path: Path, header: tuple, rows: list) -> None:
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_files(folder: Path) -> Path:
    """The M3 layout, with the time formats the public docs allow (strings, ISO-Z, ms ints, parquet datetimes)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "live_interaction.csv",
              ("user_id", "author_id", "live_id", "live_play_start_timestamp", "live_play_end_timestamp", "p_date",
               "live_source_category", "play_duration", "like_cnt", "comment_cnt", "send_gift_cnt"),
              [(u, a, lv, text(t), text(t + w), text(t)[:10].replace("-", ""), "feed", w, 0, 0, g)
               for u, lv, a, t, w, g in SESSIONS])
    pl.DataFrame({"live_id": [s[0] for s in SHOWS], "user_id": [s[1] for s in SHOWS], "author_id": [s[2] for s in SHOWS],
                  "show_timestamp": local([s[3] for s in SHOWS])}).write_parquet(folder / "live_show.parquet")
    write_csv(folder / "live_comment.csv", ("live_stream_id", "user_id", "author_id", "content", "comment_ts"), COMMENTS)
    write_csv(folder / "live_like.csv", ("user_id", "live_id", "like_timestamp"), LIKES)
    pl.DataFrame({"live_id": [r[0] for r in ROOMS], "author_id": [r[1] for r in ROOMS],
                  "live_name": ["a", "b", "", "c"], "start_timestamp": local([r[2] for r in ROOMS]),
                  "end_timestamp": local([r[3] for r in ROOMS])}).write_parquet(folder / "live_room_meta.parquet")
    write_csv(folder / "author_profile.csv", ("author_id", "is_photo_author", "is_live_author", "gender", "age_segment",
                                              "fans_user_num"), [(501, 1, 1, "F", "24-30", "1w-10w"),
                                                                 (502, 1, 1, "M", "18-23", "0-1k")])
    write_csv(folder / "user_id_set.csv", ("user_id",), [(11,), (12,)])
    pl.DataFrame({"user_id": [p[0] for p in PLAYS], "photo_id": [p[1] for p in PLAYS], "author_id": [p[2] for p in PLAYS],
                  "enter_timestamp": local([p[3] for p in PLAYS]), "is_complete_play": [p[4] for p in PLAYS]}
                 ).write_parquet(folder / "photo_play.parquet")
    write_csv(folder / "photo_tag.csv", ("photo_id", "first_level_category_name"), [(p[1], p[5]) for p in PLAYS])
    (folder / "live_emb_128_ts").mkdir(exist_ok=True)
    pl.DataFrame({"live_stream_id": [s[0] for s in SEGMENTS], "segment_id": [str(k) for k in range(len(SEGMENTS))],
                  "feature_128": [[float(x) for x in s[2]] for s in SEGMENTS], "timestamp": [s[1] for s in SEGMENTS]}
                 ).write_parquet(folder / "live_emb_128_ts" / "live_emb_128_ts_part0.parquet")
    pl.DataFrame({"live_id": [9001, 9002, 9004], "embedding": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}
                 ).write_parquet(folder / "live_emb_64.parquet")
    return folder


def adapter(raw: Path, tmp: Path, source: str = "raw", **overrides) -> KuaiLiveM3Adapter:
    settings = dict(source=source, raw_dir=str(raw), cache_dir=str(tmp / "cache"), replica_dir=str(tmp / "syn"),
                    stream="moment", long_view_seconds=60, moment_seconds=30, fast_window_minutes=5,
                    slow_window_minutes=60, counter_minutes=[5, 30], sequence_lengths=LENGTHS,
                    unmatched_events="error", train_start="2025-05-05", valid_start="2025-05-20",
                    test_start="2025-05-23", test_end="2025-05-26", replica=TINY, content_embeddings="auto")
    settings.update(overrides)
    return KuaiLiveM3Adapter(**settings)


def batch_of(m3: KuaiLiveM3Adapter, prepared, split: str) -> dict[str, torch.Tensor]:
    tables = {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}
    return m3.assemble(tables, split, torch.arange(len(prepared.arrays[f"{split}_rows"])))


def labels(batch: dict[str, torch.Tensor], key: str = "label") -> list[list[int]]:
    return torch.stack([batch[f"{key}_{t}"] for t in TASKS], 1).int().tolist()


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("m3")
    m3 = adapter(write_files(tmp / "raw"), tmp)
    return m3, m3.prepare()


# ---------------------------------------------------------------------------------- hand-written files
def test_labels_and_splits(handmade):
    m3, prepared = handmade
    assert prepared.meta["splits"] == {"train": 3, "valid": 1, "test": 3}
    valid, test = batch_of(m3, prepared, "valid"), batch_of(m3, prepared, "test")
    assert labels(valid) == [[1, 1, 0, 1, 0]]  # s3: the ISO-Z like lands in 9002
    assert labels(test) == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]]  # s5, show, s4
    stats = prepared.meta["stats"]
    assert stats["rooms"] == 4 and stats["clicks"] == 5 and stats["exposures"] == 7 and stats["content"] == "segment"
    spec = prepared.meta["spec"]
    assert spec["tasks"] == list(TASKS) and spec["sequences"] == list(SEQUENCES) and spec["content_dim"] == 4
    # room categories come from the streamer's short videos: 501 shop, 502 game (both seen in training)
    assert test["category"].tolist()[0] != test["category"].tolist()[2] and min(test["category"].tolist()) >= 2
    assert not test["live_type"].any() and not test["age"].any()  # M3 has neither: missing
    assert test["streamer_gender"].tolist()[0] != test["streamer_gender"].tolist()[2]


def test_moment_stream_with_gift_at_session_end(handmade):
    m3, prepared = handmade
    train = batch_of(m3, prepared, "train")
    # 30-s ticks, each report in the first tick strictly after it is known: the show (20:05) at 20:05:30;
    # s1 (20:10): click 20:10:30, comment (20:10:45) 20:11:00, long view 20:11:30, the gift (dated just before
    # the session's end) 20:20:00, the like's negative at the exit 20:20:30; s2 (20:12): click 20:12:30, exit 20:13:00
    a = prepared.arrays
    exposure = a["view_exposure"][a["train_rows"]]
    assert exposure.tolist() == [0, 1, 1, 1, 2, 2, 1, 1]
    assert ((a["train_time"] - a["sample_time"][exposure]) // 1000).tolist() == [30, 30, 60, 90, 30, 60, 600, 630]
    assert labels(train) == [[0] * 5, [1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0] * 5,
                             [0, 0, 0, 0, 1], [0] * 5]
    assert labels(train, "mask") == [[1] * 5, [1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0],
                                     [0, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]]


def test_a_later_tick_reads_the_rooms_later_content(handmade, tmp_path):
    m3, prepared = handmade
    fast = batch_of(m3, prepared, "train")
    assert not fast["live_content_emb"].any()  # every 30-s report of room 9001 comes before its 20:30 segment
    hourly = adapter(write_files(tmp_path / "raw"), tmp_path, moment_seconds=3600)
    slow = batch_of(hourly, hourly.prepare(), "train")
    # hourly reports at 21:00 see the segment that ended at 20:30
    assert slow["live_content_emb"].tolist() == [[0, 0, 1, 0]] * 3


def test_sequences_from_short_video_plays(handmade):
    m3, prepared = handmade
    test = batch_of(m3, prepared, "test")
    s4 = 2  # user 11 at 24th 20:30: p1, p2 (p3 is AT the exposure time: excluded)
    assert test["seq_short_mask"][s4].tolist() == [False, False, True, True]
    assert test["seq_short_author"][s4][2].item() == test["streamer"][s4].item()  # p1 by 501, one id space
    assert test["seq_long_mask"][s4].tolist() == [False, False, True]       # shop: p1
    assert test["seq_aid_mask"][s4].tolist() == [False, True]               # by 501: p1
    assert test["seq_livelong_mask"][s4].tolist() == [False, True, True]    # shop rooms clicked: s1, s3
    assert test["seq_mixed_kind"][s4].tolist() == [0, 1, 2, 2]              # p1 complete, s1 and s3 long views
    assert test["seq_short_mask"][0].tolist() == [False, False, False, True]  # s5 (user 12): p4 only
    assert prepared.meta["stats"]["short_video_rows"] == 4


def test_segment_and_room_content(handmade, tmp_path):
    m3, prepared = handmade
    valid, test = batch_of(m3, prepared, "valid"), batch_of(m3, prepared, "test")
    assert valid["live_content_emb"][0].tolist() == [0, 0, 0, 1]        # 9002's segment ended before s3
    assert valid["streamer_longterm_emb"][0].tolist() == [0, 0, 1, 0]   # 501's earlier room 9001
    assert test["live_content_emb"][2].tolist() == [1, 0, 0, 0]         # the 20:30 segment ends AT s4: not yet
    assert test["streamer_longterm_emb"][2].tolist() == [0, 0, 0.5, 0.5]
    assert not test["live_content_emb"][0].any() and not test["streamer_longterm_emb"][0].any()  # 9003: none
    room = adapter(write_files(tmp_path / "raw"), tmp_path, content_embeddings="room")
    prepared = room.prepare()
    test = batch_of(room, prepared, "test")
    assert prepared.meta["spec"]["content_dim"] == 3 and prepared.meta["stats"]["content"] == "room"
    assert test["live_content_emb"][2].tolist() == [0, 0, 1] and test["streamer_longterm_emb"][2].tolist() == [.5, .5, 0]


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


def test_missing_column(tmp_path):
    message = bad(tmp_path, "live_interaction.csv",
                  lambda p: p.write_text(p.read_text().replace("play_duration", "duration")))
    assert "play_duration" in message


def test_event_outside_the_room_window(tmp_path):
    message = bad(tmp_path, "live_comment.csv", append(f"9001,11,501,x,{ms(6, 23, 30)}"))
    assert "outside" in message and "line 3" in message and "live_room_meta.parquet" in message
    prepared = adapter(tmp_path / "raw", tmp_path, unmatched_events="drop").prepare()
    assert prepared.meta["stats"]["dropped_outside_windows"]["comment"] == 1


def test_second_timestamps(tmp_path):
    message = bad(tmp_path, "live_comment.csv",
                  lambda p: p.write_text(p.read_text().replace(str(COMMENTS[0][-1]), str(COMMENTS[0][-1] // 1000))))
    assert "seconds" in message and "line 2" in message and "comment_ts" in message


def test_unparseable_time_and_unknown_like_room(tmp_path):
    message = bad(tmp_path, "live_interaction.csv",
                  lambda p: p.write_text(p.read_text().replace(text(SESSIONS[1][3]), "yesterday")))
    assert "line 3" in message and "live_play_start_timestamp" in message
    message = bad(tmp_path / "b", "live_like.csv", append("11,4242,2025-05-21 20:31:00"))
    assert "4242" in message and "live_room_meta.parquet" in message


@pytest.mark.parametrize("file,old,new,column,line", [
    ("live_interaction.csv", "\n11,", "\n-11,", "user_id", 2),
    ("live_interaction.csv", ",600000,", ",1e300,", "play_duration", 2),  # was a polars cast traceback
    ("author_profile.csv", "\n502,", "\n-502,", "author_id", 3),
    ("photo_tag.csv", "\n1,", "\n-1,", "photo_id", 2),
    ("live_comment.csv", f",{COMMENTS[0][-1]}\n", ",99999999999999999999\n", "comment_ts", 2),  # beyond int64
])
def test_out_of_range_values_name_their_line(tmp_path, file, old, new, column, line):
    def edit(path):
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))

    message = bad(tmp_path, file, edit)
    assert f"column '{column}'" in message and f"line {line}" in message


def edit_parquet(column: str, row: int, value, dtype=None):
    def edit(path: Path) -> None:
        frame = pl.read_parquet(path)
        values = frame[column].to_list()
        values[row] = value
        frame.with_columns(pl.Series(column, values, dtype=dtype or frame[column].dtype)).write_parquet(path)
    return edit


def test_non_finite_segment_values_name_their_shard_and_row(tmp_path):
    shard = "live_emb_128_ts/live_emb_128_ts_part0.parquet"
    message = bad(tmp_path / "vector", shard, edit_parquet("feature_128", 1, [0.0, float("nan"), 0.0, 0.0]))
    assert "row 2 has a non-finite embedding value (nan)" in message and "column 'feature_128'" in message
    message = bad(tmp_path / "time", shard, edit_parquet("timestamp", 1, float("inf"), pl.Float64))
    assert "line 2 has inf, which is not a finite number" in message and "column 'timestamp'" in message
    message = bad(tmp_path / "room", "live_emb_64.parquet", edit_parquet("embedding", 2, [0.0, float("inf"), 0.0]),
                  content_embeddings="room")
    assert "row 3 has a non-finite embedding value (inf)" in message


def test_padded_ids_are_read_like_clean_ones(handmade, tmp_path):
    m3, clean = handmade
    raw = write_files(tmp_path / "raw")
    path = raw / "live_interaction.csv"
    path.write_text(path.read_text().replace("\n11,501,", "\n 11 , 501 ,"))
    assert path.read_text().count(" 11 ") == 3
    prepared = adapter(raw, tmp_path).prepare()
    assert prepared.arrays.keys() == clean.arrays.keys()
    for key in clean.arrays:
        np.testing.assert_array_equal(prepared.arrays[key], clean.arrays[key], err_msg=key)


# ---------------------------------------------------------------------------------- replica
@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replica")
    m3 = adapter(tmp / "raw", tmp, source="synthetic")
    return m3, m3.prepare()


def test_replica_is_byte_deterministic_and_in_the_m3_layout(replica, tmp_path):
    _, prepared = replica
    written = Path(prepared.meta["files_dir"])
    config = KuaiLiveM3ReplicaConfig(**TINY)
    again = write_kuailive_m3_replica(tmp_path / "again", config)
    assert sorted(p.relative_to(tmp_path / "again").as_posix() for p in again) == sorted(files(config))
    for path in again:
        assert path.read_bytes() == (written / path.relative_to(tmp_path / "again")).read_bytes(), path.name
    header = (written / "live_interaction.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["user_id", "author_id", "live_id", "live_play_start_timestamp", "live_play_end_timestamp"]
    segments = pl.read_parquet(written / "live_emb_128_ts" / "live_emb_128_ts_part0.parquet")
    assert segments.schema["live_stream_id"] == pl.String and segments["feature_128"].list.len().unique().to_list() == [128]


def test_replica_through_the_adapter(replica):
    m3, prepared = replica
    stats = prepared.meta["stats"]
    assert stats["content"] == "segment" and stats["segments"] > 0 and 6 < stats["short_per_live"] < 12
    assert all(prepared.meta["splits"][s] > 0 for s in ("train", "valid", "test"))
    tables = {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}
    cards = prepared.meta["spec"]["cardinalities"]
    for split in ("train", "valid", "test"):
        batch = m3.assemble(tables, split, torch.arange(len(prepared.arrays[f"{split}_rows"])))
        for field in prepared.meta["spec"]["user_fields"] + prepared.meta["spec"]["item_fields"]:
            assert batch[field].dtype == torch.int64 and batch[field].max() < cards[field]
        view = tables[f"{split}_rows"]
        now = tables["view_time"][view][:, None]
        for name in SEQUENCES:  # no sequence element at or after the row's read time
            item, valid = m3.sequence_items(tables, name, view)
            when = tables["item_time"][item] + torch.where((tables["item_kind"][item] == 2) & (name == "mixed"),
                                                           m3.long_view_ms, 0)
            assert valid.any() and (when < now)[valid].all(), (split, name)
        assert batch["live_content_emb"].shape[1] == 128 and batch["live_content_emb"].abs().sum(1).gt(0).float().mean() > 0.5
    for task in TASKS:
        assert prepared.arrays["test_label"][:, TASKS.index(task)].sum() > 0, task


# ---------------------------------------------------------------------------------- end to end
def test_cli_moment_cross_on_the_tiny_replica(tmp_path):
    command = [sys.executable, "-m", "recbench", "model=moment_cross", "data=kuailive_m3",
               f"paths.experiments={tmp_path / 'experiments'}", f"paths.datasets={tmp_path / 'datasets'}",
               "hydra.run.dir=" + str(tmp_path / "run"), "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
               "loader.batch_size=512", *(f"data.replica.{k}={v}" for k, v in CLI_REPLICA.items()),
               *(f"data.sequence_lengths.{k}={v}" for k, v in LENGTHS.items())]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SYNTHETIC replica" in done.stderr
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "finished" and record["data"] == "kuailive_m3" and record["data_source"] == "synthetic"
    assert 0.0 <= record["metrics"]["test"]["test/auc/click"] <= 1.0
