"""Tests of the KuaiComt synthetic replica: file layout, determinism, realism, planted comment signal."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recbench.data.kuaicomt_replica import (
    ACTIVE_DEGREES,
    AGE_RANGES,
    COMMENT_FEATURES_FILE,
    FANS_RANGES,
    FILES,
    FOLLOW_RANGES,
    FRIEND_RANGES,
    GENDERS,
    ONEHOT_CARDINALITIES,
    USER_COMMENT_FILE,
    USER_FEATURES_FILE,
    USER_VIDEO_FILE,
    VIDEO_FEATURES_FILE,
    KuaiComtReplicaConfig,
    simulate_kuaicomt_replica,
    write_kuaicomt_replica,
)
from recbench.metrics import auc  # exact, tested against sklearn in test_metrics.py

SMALL = KuaiComtReplicaConfig(n_users=300, n_videos=300, seed=0)
DEFAULT = KuaiComtReplicaConfig()
I64, F64, STR = pl.Int64, pl.Float64, pl.String

# The documented columns and types of the five files, in file order.
SCHEMAS = {
    USER_VIDEO_FILE: {
        "user_id": I64, "video_id": I64, "p_hourmin": I64, "time_ms": F64,
        **{c: I64 for c in ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_collect",
                            "is_hate", "long_view")},
        "play_time_ms": F64, "duration_ms": F64, "profile_stay_time": I64, "comment_stay_time": I64,
    },
    USER_COMMENT_FILE: {"user_id": I64, "comment_id": I64, "time_stamp": I64, "photo_id": I64,
                        "is_like": I64, "is_reply": I64},
    USER_FEATURES_FILE: {
        "user_id": I64, "user_active_degree": STR, "is_live_author": I64, "produce_video_num": I64,
        "follow_count": I64, "follow_user_num_range": STR, "fans_count": I64, "fans_user_num_range": STR,
        "friend_user_num_range": STR, "register_days": I64, "gender": STR, "age_range": STR,
        **{f"onehot_feat{k}": I64 for k in range(19)},
    },
    VIDEO_FEATURES_FILE: {"video_id": I64, "author_id": I64, "video_type": STR, "upload_dt": STR, "caption": STR,
                          "duration": F64, "category": STR},
    COMMENT_FEATURES_FILE: {"comment_id": I64, "comment_content": STR, "video_id": I64, "comment_like_cnt": I64,
                            "comment_reply_out": I64, "show_comment_cnt_td": I64},
}
START_MS = int(datetime(2023, 9, 30, tzinfo=timezone(timedelta(hours=8))).timestamp() * 1000)  # local midnight
END_MS = START_MS + 35 * 86_400_000  # 2023-11-04 00:00 Asia/Shanghai


def read(folder: Path, name: str) -> pl.DataFrame:
    """Read one replica file strictly with its documented schema (the header must match it exactly)."""
    path = folder / name
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(",")
    assert header == list(SCHEMAS[name]), name
    return pl.read_csv(path, schema=SCHEMAS[name])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = pl.Series(np.asarray(a, dtype=np.float64)).rank("average").to_numpy()
    rb = pl.Series(np.asarray(b, dtype=np.float64)).rank("average").to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "replica"
    write_kuaicomt_replica(out, SMALL)
    return out, {name: read(out, name) for name in FILES}, simulate_kuaicomt_replica(SMALL)


@pytest.fixture(scope="module")
def default():
    start = time.perf_counter()
    replica = simulate_kuaicomt_replica(DEFAULT)
    return replica, time.perf_counter() - start


# ---------------------------------------------------------------------------------- files, bytes
def test_write_is_byte_deterministic_and_seed_dependent(small, tmp_path):
    out, _, _ = small
    again = write_kuaicomt_replica(tmp_path / "again", SMALL)
    other = write_kuaicomt_replica(tmp_path / "other", KuaiComtReplicaConfig(n_users=300, n_videos=300, seed=1))
    assert [p.name for p in again] == list(FILES)
    for path, path_other in zip(again, other):
        assert path.read_bytes() == (out / path.name).read_bytes(), path.name
        assert path.read_bytes() != path_other.read_bytes(), path.name
    # Rewriting replaces the folder atomically and leaves no temporary folders behind.
    write_kuaicomt_replica(tmp_path / "again", SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(FILES)


def test_in_memory_tables_match_the_files(small):
    _, files, replica = small
    for name, table in ((USER_VIDEO_FILE, replica.user_video_inter), (USER_COMMENT_FILE, replica.user_comment_inter),
                        (USER_FEATURES_FILE, replica.user_features), (VIDEO_FEATURES_FILE, replica.video_features),
                        (COMMENT_FEATURES_FILE, replica.comment_features)):
        assert files[name].equals(table), name


def test_text_is_utf8_chinese_with_bracket_emoji_and_hashtags(small):
    out, files, replica = small
    for name in FILES:
        (out / name).read_bytes().decode("utf-8", errors="strict")
    han = re.compile(r"[\u4e00-\u9fff]")
    comments = files[COMMENT_FEATURES_FILE]["comment_content"]
    captions = files[VIDEO_FEATURES_FILE]["caption"]
    assert comments.null_count() == 0 and captions.null_count() == 0
    assert all(han.search(t) for t in comments) and all(han.search(t) for t in captions)
    assert comments.str.contains(r"\[[^\]]+\]").mean() > 0.3  # emoji tokens like [捂脸]
    assert captions.str.contains("#").all()
    assert set(files[VIDEO_FEATURES_FILE]["category"]) <= set(replica.topic_names)
    assert set(files[VIDEO_FEATURES_FILE]["video_type"]) == {"NORMAL", "AD"}
    assert files[VIDEO_FEATURES_FILE]["upload_dt"].str.to_date("%Y-%m-%d", strict=True).null_count() == 0


def test_texts_separate_the_topics(small):
    """A bag-of-characters centroid classifier recovers the hidden comment topic from the text."""
    _, files, replica = small
    comments = files[COMMENT_FEATURES_FILE].join(replica.comments.select("comment_id", "topic"), on="comment_id")
    topic = comments["topic"].to_numpy()
    chars = sorted(set("".join(comments["comment_content"].to_list())))
    index = {c: k for k, c in enumerate(chars)}
    bag = np.zeros((len(topic), len(chars)))
    for row, text in enumerate(comments["comment_content"]):
        for c in text:
            bag[row, index[c]] += 1.0
    bag /= np.linalg.norm(bag, axis=1, keepdims=True)
    train = np.arange(len(topic)) % 2 == 0
    centroids = np.stack([bag[train & (topic == t)].mean(axis=0) for t in range(SMALL.n_topics)])
    accuracy = (np.argmax(bag[~train] @ centroids.T, axis=1) == topic[~train]).mean()
    assert accuracy > 0.8


# ----------------------------------------------------------------------------------- ids, layout
def test_ids_are_large_distinct_and_consistent(small):
    _, files, _ = small
    uv, uc = files[USER_VIDEO_FILE], files[USER_COMMENT_FILE]
    users, videos, comments = files[USER_FEATURES_FILE], files[VIDEO_FEATURES_FILE], files[COMMENT_FEATURES_FILE]
    assert users["user_id"].n_unique() == SMALL.n_users and videos["video_id"].n_unique() == SMALL.n_videos
    assert comments["comment_id"].n_unique() == comments.height
    assert users["user_id"].min() >= 100_000_000 and users["user_id"].max() < 3_000_000_000
    assert videos["video_id"].min() >= 10_000_000_000 and videos["video_id"].max() < 120_000_000_000
    assert comments["comment_id"].min() >= 10_000_000_000
    assert videos["author_id"].min() >= 100_000_000
    # Every reference resolves; (user, video) impressions are unique.
    assert set(uv["user_id"]) <= set(users["user_id"]) and set(uv["video_id"]) <= set(videos["video_id"])
    assert set(comments["video_id"]) == set(videos["video_id"])
    assert uv.select("user_id", "video_id").is_duplicated().sum() == 0
    assert set(uc["comment_id"]) <= set(comments["comment_id"])


def test_at_least_55_comments_per_video_and_heavy_tailed_likes(small):
    _, files, _ = small
    comments = files[COMMENT_FEATURES_FILE]
    per_video = comments.group_by("video_id").len()["len"]
    assert per_video.min() >= 55 and 60 < per_video.mean() < 85
    likes = comments["comment_like_cnt"].to_numpy()
    assert likes.min() >= 2 and np.quantile(likes, 0.99) > 20 * np.median(likes)
    assert (comments["show_comment_cnt_td"] >= comments["comment_like_cnt"]).all()
    assert (comments["comment_reply_out"] >= 0).all()


def test_user_features_use_the_documented_vocabularies(small):
    out, files, _ = small
    users = files[USER_FEATURES_FILE]
    assert set(users["user_active_degree"]) <= set(ACTIVE_DEGREES)
    assert {"full_active", "high_active", "middle_active", "UNKNOWN", "2_14_day_new"} <= set(users["user_active_degree"])
    assert set(users["follow_user_num_range"]) <= set(FOLLOW_RANGES)
    assert set(users["fans_user_num_range"]) <= set(FANS_RANGES)
    assert set(users["friend_user_num_range"]) <= set(FRIEND_RANGES)
    assert set(users["gender"]) <= set(GENDERS) and set(users["age_range"]) <= set(AGE_RANGES)
    for k, card in enumerate(ONEHOT_CARDINALITIES):
        assert users[f"onehot_feat{k}"].min() >= 0 and users[f"onehot_feat{k}"].max() < card
    # Range buckets agree with the counts, and the ones with commas are quoted in the raw file.
    zero_follow = users.filter(pl.col("follow_count") == 0)["follow_user_num_range"]
    assert (zero_follow == "0").all()
    assert (users.filter(pl.col("follow_count").is_between(1, 10))["follow_user_num_range"] == "(0,10]").all()
    raw = (out / USER_FEATURES_FILE).read_text(encoding="utf-8")
    assert '"(0,10]"' in raw and '"[1,10)"' in raw
    new = users.filter(pl.col("user_active_degree") == "2_14_day_new")["register_days"]
    assert new.is_between(2, 14).all()


# -------------------------------------------------------------------------------------- realism
def test_impressions_are_plausible(small):
    _, files, _ = small
    uv = files[USER_VIDEO_FILE]
    t = uv["time_ms"]
    assert t.min() >= START_MS and t.max() < END_MS
    local_hour = ((t.cast(pl.Int64) - START_MS) // 3_600_000) % 24
    assert (uv["p_hourmin"] == local_hour * 100).all()
    assert 0.8 < uv["is_click"].mean() < 0.95
    assert 0.03 < uv["is_like"].mean() < 0.07
    assert uv["is_follow"].mean() < 0.015 and uv["is_hate"].mean() < 0.01
    # Play time only for clicked impressions; the long_view rule holds exactly.
    assert ((uv["play_time_ms"] > 0) == (uv["is_click"] == 1)).all()
    rule = pl.when(pl.col("duration_ms") <= 18_000).then(pl.col("play_time_ms") >= pl.col("duration_ms")) \
        .otherwise(pl.col("play_time_ms") >= 18_000).cast(pl.Int64)
    assert (uv.select(rule == pl.col("long_view")).to_series()).all()


def test_comment_staytime_is_zero_inflated_and_heavy_tailed(small, default):
    _, files, replica = small
    uv = files[USER_VIDEO_FILE]
    stay = uv["comment_stay_time"].to_numpy()
    opened = replica.impressions["open_start_ms"].is_not_null().to_numpy()
    assert ((stay > 0) == opened).all()  # zero iff the section was not opened
    assert (uv.filter(pl.col("comment_stay_time") > 0)["is_click"] == 1).all()
    big, seconds = default
    stay = big.user_video_inter["comment_stay_time"].to_numpy()
    open_rate = (stay > 0).mean()
    assert 0.08 < open_rate < 0.20
    q50, q99 = np.quantile(stay[stay > 0] / 1000.0, [0.5, 0.99])
    assert 3.0 < q50 < 12.0 and q99 > 60.0
    assert seconds < 5.0


def test_comment_interactions_lie_inside_an_opened_impression(small):
    _, files, replica = small
    uv, uc = files[USER_VIDEO_FILE], files[USER_COMMENT_FILE]
    assert uc.height > 0 and ((uc["is_like"] + uc["is_reply"]) >= 1).all()
    imps = uv.with_columns(replica.impressions["open_start_ms"])
    joined = uc.join(imps, left_on=["user_id", "photo_id"], right_on=["user_id", "video_id"], how="left")
    assert joined["time_ms"].null_count() == 0  # every interaction has its impression
    assert (joined["comment_stay_time"] > 0).all()
    # Exact check with the hidden opening time, and a looser one from the file columns alone.
    start_s = joined["open_start_ms"] // 1000
    end_s = (joined["open_start_ms"] + joined["comment_stay_time"]) // 1000
    assert joined["time_stamp"].is_between(start_s, end_s).all()
    upper = (joined["time_ms"] + joined["play_time_ms"] + joined["comment_stay_time"]) / 1000
    assert ((joined["time_stamp"] >= (joined["time_ms"] // 1000)) & (joined["time_stamp"] <= upper)).all()
    # The comment belongs to the video.
    owner = uc.join(files[COMMENT_FEATURES_FILE].select("comment_id", "video_id"), on="comment_id")
    assert (owner["photo_id"] == owner["video_id"]).all()
    assert uc.select("user_id", "comment_id").is_duplicated().sum() == 0


def test_validate_rejects_bad_configs():
    for bad in ({"n_topics": 1}, {"n_topics": 20}, {"min_comments_per_video": 3}, {"comment_open_rate": 0.95},
                {"off_topic_rate": 0.0}, {"n_videos": 5}):
        with pytest.raises(ValueError):
            simulate_kuaicomt_replica(KuaiComtReplicaConfig(**bad))


# ------------------------------------------------------------------------------- planted signal
def top_comments_from_files(replica, k: int = 6) -> pl.DataFrame:
    """The k most-liked comments of every video, computed from comment_features alone."""
    return (replica.comment_features.sort(["video_id", "comment_like_cnt"], descending=[False, True])
            .with_columns(pl.int_range(pl.len()).over("video_id").alias("rank"))
            .filter(pl.col("rank") < k).select("video_id", "comment_id", "rank", "comment_like_cnt"))


def test_top_comment_relevance_drives_opening_and_staytime(default):
    replica, _ = default
    uv, imps = replica.user_video_inter, replica.impressions
    # The hidden relevance is the mean affinity to the topics of the file's 6 most-liked comments.
    top = top_comments_from_files(replica).join(replica.comments.select("comment_id", "topic"), on="comment_id")
    rel = (uv.select("user_id", "video_id").with_row_index("row")
           .join(top, on="video_id").join(replica.user_topics, on=["user_id", "topic"])
           .group_by("row").agg(pl.col("affinity").mean()).sort("row"))
    assert np.allclose(rel["affinity"].to_numpy(), imps["top_relevance"].to_numpy())

    stay = uv["comment_stay_time"].to_numpy()
    opened, clicked = stay > 0, uv["is_click"].to_numpy() == 1
    top_rel, video_rel = imps["top_relevance"].to_numpy(), imps["video_relevance"].to_numpy()
    rho = spearman(top_rel[opened], stay[opened])
    assert rho > 0.25, rho
    # Beyond the video topic alone: the partial correlation given the video-topic relevance is positive.
    x = np.c_[np.ones(opened.sum()), video_rel[opened]]
    resid_stay = np.log(stay[opened]) - x @ np.linalg.lstsq(x, np.log(stay[opened]), rcond=None)[0]
    resid_rel = top_rel[opened] - x @ np.linalg.lstsq(x, top_rel[opened], rcond=None)[0]
    assert np.corrcoef(resid_stay, resid_rel)[0, 1] > 0.1
    assert auc(top_rel[clicked], opened[clicked]) > 0.65
    # Documented real-data patterns: staytime falls mildly with the top comments' likes and rises
    # with the user's number of comment interactions.
    assert spearman(imps["top_like_mean"].to_numpy()[opened], stay[opened]) < -0.02
    per_user = (uv.filter(pl.col("comment_stay_time") > 0).group_by("user_id")
                .agg(pl.col("comment_stay_time").median().alias("stay"))
                .join(replica.user_comment_inter.group_by("user_id").len(), on="user_id", how="left")
                .fill_null(0))
    assert spearman(per_user["len"].to_numpy(), per_user["stay"].to_numpy()) > 0.2


def test_users_interact_more_with_on_interest_comments(default):
    replica, _ = default
    uv, uc = replica.user_video_inter, replica.user_comment_inter
    # Shown comments = the 6 most-liked of the video, for every opened impression (from the files).
    shown = (uv.filter(pl.col("comment_stay_time") > 0).select("user_id", "video_id")
             .join(top_comments_from_files(replica), on="video_id")
             .join(replica.comments.select("comment_id", "topic"), on="comment_id")
             .join(replica.user_topics.select("user_id", "topic", "on_interest"), on=["user_id", "topic"])
             .join(uc.select("user_id", "comment_id", pl.lit(True).alias("hit")), on=["user_id", "comment_id"],
                   how="left")
             .with_columns(pl.col("hit").fill_null(False)))
    rates = shown.group_by("on_interest").agg(pl.col("hit").mean()).sort("on_interest")["hit"].to_list()
    assert rates[1] / rates[0] > 2.0, rates
    # Most interactions fall on the visible top comments, and every one on a seen comment.
    assert shown["hit"].sum() > 0.5 * uc.height
    seen = replica.comment_views.filter("interacted")
    assert seen.height == uc.height
    assert (uc.sort("user_id", "comment_id")["comment_id"] == seen.sort("user_id", "comment_id")["comment_id"]).all()
    per_user = uc.height / DEFAULT.n_users
    assert 1.0 < per_user < 8.0
