"""KuaiComt adapter on hand-written files: documented layout, the authors' alias layout, bad input."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recbench.data.kuaicomt import KuaiComtAdapter
from recbench.errors import UserInputError

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
IMPRESSION_HEADER = ("user_id,video_id,p_hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,"
                     "is_collect,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time")
# (user, video, October day, hour, comment_stay_time ms)
IMPRESSIONS = [(11, 101, 5, 10, 8000), (11, 102, 6, 11, 0), (12, 101, 23, 9, 15000), (12, 102, 28, 20, 3000),
               (11, 101, 29, 8, 1000), (12, 103, 2, 8, 500), (12, 101, 3, 9, 2000)]


def ms(day: int, hour: int) -> int:
    return int(dt.datetime(2023, 10, day, hour, tzinfo=SHANGHAI).timestamp() * 1000)


def write_files(folder: Path, separator: str = ",", video_key: str = "video_id", type_key: str = "video_type",
                extra_interactions: tuple = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    join = separator.join
    rows = [IMPRESSION_HEADER.replace(",", separator).replace("video_id", video_key)]
    rows += [join(map(str, (u, v, f"{h}00", f"{ms(d, h)}.0", 1, 0, 0, 0, 0, 0, 0, 1, 20000, 30000, 0, st)))
             for u, v, d, h, st in IMPRESSIONS]
    (folder / "user_video_inter.csv").write_text("\n".join(rows) + "\n")
    interactions = [join(("user_id", "comment_id", "time_stamp", "photo_id", "is_like", "is_reply")),
                    join(map(str, (11, 9001, ms(5, 10) // 1000 + 2, 101, 1, 0))),   # in the day-5 impression
                    join(map(str, (12, 9003, ms(28, 20) // 1000 + 1, 102, 0, 1))),  # comment of another video
                    join(map(str, (12, 9004, ms(23, 9) // 1000 + 5, 101, 0, 1)))]   # in the day-23 impression
    interactions += [join(map(str, row)) for row in extra_interactions]
    (folder / "user_comment_inter.csv").write_text("\n".join(interactions) + "\n")
    quote = '"' if separator == "," else ""
    users = [join(("user_id", "user_active_degree", "follow_user_num_range", "fans_user_num_range",
                   "friend_user_num_range", "register_days")),
             join(("11", "high_active", f"{quote}(0,10]{quote}", f"{quote}[1,10){quote}", "0", "100")),
             join(("12", "2_14_day_new", "0", "0", f"{quote}[1,5){quote}", "5"))]
    (folder / "user_features.csv").write_text("\n".join(users) + "\n")
    videos = [join((video_key, "author_id", type_key, "upload_dt", "caption", "duration", "category")),
              join(("101", "7", "NORMAL", "2023-07-01", "猫咪日常 #宠物", "30000.0", "宠物")),
              join(("102", "8", "AD", "2023-07-02", "美食探店[馋]", "30000.0", "美食")),
              join(("103", "7", "NORMAL", "2023-07-03", "旅行", "30000.0", "旅行"))]
    (folder / "video_features.csv").write_text("\n".join(videos) + "\n", encoding="utf-8")
    comments = [join(("comment_id", "comment_content", video_key, "comment_like_cnt", "comment_reply_out",
                      "show_comment_cnt_td"))]
    comments += [join((str(9000 + i), f"评论{i}[捂脸]", "101" if i < 5 else "102", str(10 - i), str(i % 3), "100"))
                 for i in range(8)]
    (folder / "comment_features.csv").write_text("\n".join(comments) + "\n", encoding="utf-8")
    return folder


def adapter(raw: Path, tmp: Path, **overrides) -> KuaiComtAdapter:
    settings = dict(source="raw", raw_dir=str(raw), cache_dir=str(tmp / "cache"), replica_dir=str(tmp / "syn"),
                    min_duration_s=5, max_duration_s=400, only_opened=True, train_start="2023-10-01",
                    valid_start="2023-10-22", test_start="2023-10-27", test_end="2023-11-01",
                    shown_comments=6, long_view_quantile=0.7, text_embeddings=None, replica={})
    settings.update(overrides)
    return KuaiComtAdapter(**settings)


def test_documented_layout_builds_opened_impressions_with_labels(tmp_path):
    prepared = adapter(write_files(tmp_path / "raw"), tmp_path).prepare()
    arrays = prepared.arrays
    # opened only (the day-6 impression has staytime 0), ordered by time within each split
    assert prepared.meta["splits"] == {"train": 3, "valid": 1, "test": 2}
    assert arrays["train_label_staytime"].tolist() == [0.5, 2.0, 8.0]
    assert arrays["valid_label_staytime"].tolist() == [15.0]
    assert arrays["test_label_staytime"].tolist() == [3.0, 1.0]
    # long view threshold: linear 70th percentile of the training staytimes (0.5, 2, 8 -> 4.4)
    assert prepared.meta["long_view_threshold_s"] == pytest.approx(4.4)
    assert arrays["train_label_long_view"].tolist() == [0.0, 0.0, 1.0]
    tables = {k: torch.from_numpy(v) for k, v in arrays.items()}
    batch = adapter(tmp_path / "raw", tmp_path).assemble(tables, "train", torch.arange(3))
    # shown comments of video 101: its 5 comments (9000..9004, indices 2..6) in some slot order, one empty slot
    shown = batch["comments"][2]
    assert sorted(shown.tolist()) == [0, 2, 3, 4, 5, 6] and shown[5] == 0
    assert batch["comments_mask"][2].tolist() == [True] * 5 + [False]
    assert batch["comments"][0].tolist() == [0] * 6  # video 103 has no comments
    # the day-5 impression liked comment 9001 (index 3), wherever its slot is
    assert batch["label_clicked"][2].tolist() == (shown == 3).float().tolist()
    # the user-agnostic score log1p(likes) + log1p(replies) of the split's own days travels with its comment:
    # in training only the day-5 like of 9001 (index 3) counts
    scores = dict(zip(shown.tolist(), batch["label_comment_score"][2].tolist()))
    assert scores == pytest.approx({2: 0.0, 3: math.log1p(1), 4: 0.0, 5: 0.0, 6: 0.0, 0: 0.0})
    valid = adapter(tmp_path / "raw", tmp_path).assemble(tables, "valid", torch.arange(1))
    assert valid["label_clicked"][0].tolist() == (valid["comments"][0] == 6).float().tolist()  # reply to 9004
    assert valid["label_clicked"][0].sum() == 1
    # texts for the text stage, keyed by the same indices the batches use
    captions = dict(zip(prepared.frames["video_text"]["video"], prepared.frames["video_text"]["text"]))
    assert captions[int(batch["video"][2])] == "猫咪日常 #宠物"
    assert set(prepared.frames["comment_text"]["text"]) >= {"评论0[捂脸]"}
    # no label among the features
    assert not {k for k in batch if "label" in k} & set(prepared.meta["spec"]["user_fields"]
                                                        + prepared.meta["spec"]["item_fields"])


def test_alias_tab_layout_gives_identical_arrays(tmp_path):
    documented = adapter(write_files(tmp_path / "doc"), tmp_path / "a").prepare()
    aliased = adapter(write_files(tmp_path / "alias", "\t", "photo_id", "photo_type"), tmp_path / "b").prepare()
    assert documented.arrays.keys() == aliased.arrays.keys()
    for key in documented.arrays:
        np.testing.assert_array_equal(documented.arrays[key], aliased.arrays[key], err_msg=key)


def test_comment_history_holds_only_earlier_engagements(tmp_path):
    raw = write_files(tmp_path / "raw")
    kuaicomt = adapter(raw, tmp_path, comment_history=2)
    prepared = kuaicomt.prepare()
    tables = {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}
    history = lambda split, n: kuaicomt.assemble(tables, split, torch.arange(n))["comment_history"].tolist()  # noqa: E731
    # training impressions come before every engagement: empty histories
    assert history("train", 3) == [[0, 0]] * 3
    # the day-23 impression's own reply (5 s after it starts) is its label, never its history
    assert history("valid", 1) == [[0, 0]]
    # day 28 (user 12): the day-23 reply to 9004 (index 6), not the later reply to 9003;
    # day 29 (user 11): the day-5 like of 9001 (index 3); newest last, left-padded
    assert history("test", 2) == [[0, 6], [0, 3]]
    assert prepared.meta["spec"]["comment_history"] == 2


def test_all_impressions_when_not_only_opened(tmp_path):
    prepared = adapter(write_files(tmp_path / "raw"), tmp_path, only_opened=False).prepare()
    assert prepared.meta["splits"]["train"] == 4
    assert 0.0 in prepared.arrays["train_label_staytime"]


def bad(tmp_path: Path, file: str, edit) -> str:
    raw = write_files(tmp_path / "raw")
    path = raw / file
    edit(path)
    with pytest.raises(UserInputError) as info:
        adapter(raw, tmp_path).prepare()
    message = str(info.value)
    assert "\n" not in message and "Fix:" in message and file in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    return message


def test_negative_staytime(tmp_path):
    message = bad(tmp_path, "user_video_inter.csv",
                  lambda p: p.write_text(p.read_text().replace(",8000\n", ",-8000\n")))
    assert "comment_stay_time" in message and "line 2" in message


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_staytime(tmp_path, value):
    message = bad(tmp_path, "user_video_inter.csv",
                  lambda p: p.write_text(p.read_text().replace(",8000\n", f",{value}\n")))
    assert "comment_stay_time" in message and "line 2" in message and "finite" in message


@pytest.mark.parametrize("file,old,new,column", [
    ("user_video_inter.csv", ",20000,30000,0,8000\n", ",20000,nan,0,8000\n", "duration_ms"),
    ("user_video_inter.csv", ",20000,30000,0,8000\n", ",20000,-30000,0,8000\n", "duration_ms"),
    ("user_video_inter.csv", ",20000,30000,0,8000\n", ",inf,30000,0,8000\n", "play_time_ms"),
    ("user_features.csv", ",100\n", ",nan\n", "register_days"),
    ("comment_features.csv", ",10,0,100\n", ",-10,0,100\n", "comment_like_cnt"),
    ("comment_features.csv", ",10,0,100\n", ",10,inf,100\n", "comment_reply_out"),
    ("user_comment_inter.csv", ",101,1,0\n", ",101,-1,0\n", "is_like"),
])
def test_non_finite_or_negative_amounts(tmp_path, file, old, new, column):
    """Every numeric column read is finite and >= 0 (a NaN duration was dropped by the duration filter,
    a NaN register_days fell in the last bucket, a NaN like count sorted first); empty values stay allowed."""
    def edit(path):
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))

    message = bad(tmp_path, file, edit)
    assert f"column '{column}'" in message and "line 2" in message


def test_empty_amounts_stay_allowed(tmp_path):
    """Empty is not NaN: an empty register_days falls in the first bucket and an empty like count sorts its
    comment last (the real files have empty cells; only NaN / inf / negative values are refused)."""
    raw = write_files(tmp_path / "raw")
    for name, old, new in (("user_features.csv", ",100\n", ",\n"),
                           ("comment_features.csv", ",10,0,100\n", ",,0,100\n")):
        (raw / name).write_text((raw / name).read_text().replace(old, new, 1))
    prepared = adapter(raw, tmp_path).prepare()
    assert prepared.meta["splits"] == {"train": 3, "valid": 1, "test": 2}


def test_impression_of_a_video_missing_from_video_features(tmp_path):
    """datasets.md knows of no such rows in the real release: a mismatched file, one line (was index 1)."""
    message = bad(tmp_path, "user_video_inter.csv",
                  lambda p: p.write_text(p.read_text().replace("\n12,102,", "\n12,555,", 1)))
    assert "line 5 has video_id 555" in message and "video_features.csv" in message
    assert "column 'video_id'" in message


def write_export(folder: Path, name: str, ids: list[int], chunks: list[np.ndarray]) -> None:
    """A finished text-stage export (recbench/text/export.py layout), written by hand."""
    import hashlib
    import json

    (folder / name).mkdir(parents=True)
    ids_array = np.asarray(ids, np.int64)
    np.save(folder / name / "ids.npy", ids_array)
    entries, start = [], 0
    for index, chunk in enumerate(chunks):
        np.save(folder / name / f"chunk-{index:05d}.npy", chunk.astype(np.float32))
        entries.append({"file": f"chunk-{index:05d}.npy", "start": start, "rows": len(chunk)})
        start += len(chunk)
    digest = hashlib.sha256(np.ascontiguousarray(ids_array, dtype="<i8").tobytes()).hexdigest()
    manifest = {"complete": True, "ids_sha256": digest, "dim": chunks[0].shape[1], "chunks": entries}
    (folder / name / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_text_embedding_row_is_one_line(tmp_path, value):
    """data.text_embeddings=<export>: a NaN / inf row is one line naming the chunk file, the row and its id,
    not a run that trains on it."""
    raw = write_files(tmp_path / "raw")
    export = tmp_path / "export"
    write_export(export, "video", [101, 102, 103], [np.eye(3, 4)])
    comments = np.ones((8, 4))
    comments[6, 2] = value
    write_export(export, "comment", [9000 + i for i in range(8)], [comments[:5], comments[5:]])
    with pytest.raises(UserInputError) as info:
        adapter(raw, tmp_path, text_embeddings=str(export)).prepare()
    message = str(info.value)
    assert "\n" not in message and "Fix:" in message
    assert str(export / "comment" / "chunk-00001.npy") in message and "row 1 (row 6 of the export, id 9006)" in message
    clean = tmp_path / "clean"
    write_export(clean, "video", [101, 102, 103], [np.eye(3, 4)])
    write_export(clean, "comment", [9000 + i for i in range(8)], [np.ones((8, 4))])
    prepared = adapter(raw, tmp_path, text_embeddings=str(clean)).prepare()  # the same export, finite: loads
    assert prepared.meta["spec"]["text_dim"] == 4


def test_comment_of_unknown_video(tmp_path):
    message = bad(tmp_path, "comment_features.csv",
                  lambda p: p.write_text(p.read_text() + "9999,孤儿评论,555,1,0,1\n"))
    assert "555" in message


def test_invalid_utf8_text(tmp_path):
    message = bad(tmp_path, "video_features.csv",
                  lambda p: p.write_bytes(p.read_bytes().replace("旅行".encode(), b"\xff\xfe")))
    assert "UTF-8" in message


def test_missing_column_and_non_numeric_id(tmp_path):
    message = bad(tmp_path, "user_comment_inter.csv",
                  lambda p: p.write_text(p.read_text().replace("is_reply", "reply")))
    assert "is_reply" in message
    message = bad(tmp_path / "2", "user_video_inter.csv",
                  lambda p: p.write_text(p.read_text().replace("\n11,101,", "\nabc,101,", 1)))
    assert "user_id" in message and "abc" in message


def test_missing_file_with_source_raw(tmp_path):
    raw = write_files(tmp_path / "raw")
    (raw / "user_features.csv").unlink()
    with pytest.raises(UserInputError, match="user_features.csv"):
        adapter(raw, tmp_path).prepare()


# ---------------------------------------------------------------------- adversarial leak tests (issue 16)
def built(tmp_path: Path, *extra, **overrides):
    kuaicomt = adapter(write_files(tmp_path / "raw", extra_interactions=extra), tmp_path, **overrides)
    prepared = kuaicomt.prepare()
    tables = {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}
    return prepared, lambda split, n: kuaicomt.assemble(tables, split, torch.arange(n))


def test_a_like_from_a_later_split_or_outside_the_window_is_no_label(tmp_path):
    # user 11 watched video 101 on day 5 (train, opened) and never again before day 29 (test):
    # a like of 9002 on day 20 (train, 15 days later) and one on day 26 (valid) must not become day-5 labels
    late = (11, 9002, ms(20, 10) // 1000, 101, 1, 0)
    next_split = (11, 9000, ms(26, 10) // 1000, 101, 1, 0)
    prepared, batch = built(tmp_path, late, next_split)
    day5 = batch("train", 3)
    assert day5["label_clicked"][2].sum() == 1  # only the like 2 s after the impression (9001)
    # widening the attribution window admits the day-20 like (same split), never the day-26 one
    prepared, batch = built(tmp_path / "wide", late, next_split, comment_window_s=30 * 86_400)
    day5 = batch("train", 3)
    hits = {int(c) for c, hit in zip(day5["comments"][2], day5["label_clicked"][2]) if hit}
    assert hits == {3, 4}  # 9001 and 9002 (catalogue = id indices here), not 9000


def test_an_interaction_in_the_impressions_own_second_is_its_label_not_its_history(tmp_path):
    # the day-5 impression starts at ms(5, 10) (whole second); the like below carries that same second
    same_second = (11, 9000, ms(5, 10) // 1000, 101, 1, 0)
    prepared, batch = built(tmp_path, same_second, comment_history=3)
    day5 = batch("train", 3)
    hits = {int(c) for c, hit in zip(day5["comments"][2], day5["label_clicked"][2]) if hit}
    assert hits == {2, 3}  # 9000 (same second) and 9001 (2 s later)
    assert day5["comment_history"][2].tolist() == [0, 0, 0]
    # the next impression of user 11 (day 29, test) sees both in its history, oldest first
    assert batch("test", 2)["comment_history"][1].tolist() == [0, 2, 3]


def test_the_comment_popularity_target_differs_between_splits(tmp_path):
    # 9002 is liked three times in training and never later; 9004 is replied to only in validation
    likes = [(50 + k, 9002, ms(10, 10) // 1000 + k, 101, 1, 0) for k in range(3)]
    prepared, batch = built(tmp_path, *likes)
    a = prepared.arrays
    assert a["train_comment_score"][4] == pytest.approx(math.log1p(3))  # 9002 = catalogue index 4
    assert a["valid_comment_score"][4] == 0 and a["test_comment_score"][4] == 0
    assert a["valid_comment_score"][6] == pytest.approx(math.log1p(1)) and a["train_comment_score"][6] == 0
    # a lookup of training targets does not reproduce the validation list of the same video
    train_list, valid_list = batch("train", 3)["label_comment_score"][2], batch("valid", 1)["label_comment_score"][0]
    assert batch("train", 3)["video"][2] == batch("valid", 1)["video"][0]
    assert not torch.equal(train_list, valid_list)


def test_id_vocabularies_come_from_the_training_split_only(tmp_path):
    prepared, batch = built(tmp_path)
    a, spec = prepared.arrays, prepared.meta["spec"]
    # video 102 (catalogue index 3) is watched only on day 28 (test): its id is "unseen" (1), its comments too
    assert a["video_id_of"].tolist() == [0, 1, 2, 1, 3]  # pad, unknown, 101, 102 (test only), 103
    test = batch("test", 2)
    assert test["video"][0] == 1 and set(test["comments"][0].tolist()) <= {0, 1}
    assert spec["cardinalities"]["video"] == 4 and spec["cardinalities"]["comment"] == 7
    # texts stay keyed by the catalogue: the test video's caption is still found by the text stage
    captions = dict(zip(prepared.frames["video_text"]["video"], prepared.frames["video_text"]["text"]))
    assert captions[int(a["sample_video"][a["test_rows"][0]])] == "美食探店[馋]"
