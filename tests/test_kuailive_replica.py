"""Tests of the KuaiLive synthetic replica: file layout, determinism, real-file quirks, rates, and the
planted signal (the moment inside a room, short-video interest -> live clicks)."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from recbench.data.kuailive_replica import (
    CLICK_FILE,
    COMMENT_FILE,
    CSV_FILES,
    EVENT_COLUMNS,
    FILES,
    GIFT_FILE,
    LIKE_FILE,
    NEGATIVE_FILE,
    PHOTO_COLUMNS,
    PHOTO_FILE,
    PHOTO_TAG_COLUMNS,
    PHOTO_TAG_FILE,
    ROOM_COLUMNS,
    ROOM_FILE,
    STREAMER_COLUMNS,
    STREAMER_FILE,
    TITLE_FILE,
    USER_COLUMNS,
    USER_FILE,
    WINDOW_END_MS,
    WINDOW_START_MS,
    KuaiLiveReplicaConfig,
    simulate_kuailive_replica,
    write_kuailive_replica,
)
from recbench.metrics import auc, gauc  # exact, tested against sklearn in test_metrics.py

SMALL = KuaiLiveReplicaConfig(n_users=300, n_streamers=200, n_authors=300, seed=0)
HEADERS = {CLICK_FILE: (*EVENT_COLUMNS, "watch_live_time"), NEGATIVE_FILE: EVENT_COLUMNS, COMMENT_FILE: EVENT_COLUMNS,
           LIKE_FILE: EVENT_COLUMNS, GIFT_FILE: (*EVENT_COLUMNS, "gift_price"), ROOM_FILE: ROOM_COLUMNS,
           USER_FILE: USER_COLUMNS, STREAMER_FILE: STREAMER_COLUMNS, PHOTO_FILE: PHOTO_COLUMNS,
           PHOTO_TAG_FILE: PHOTO_TAG_COLUMNS}
EVENTS = (CLICK_FILE, NEGATIVE_FILE, COMMENT_FILE, LIKE_FILE, GIFT_FILE)
TEST_START_MS = WINDOW_START_MS + 18 * 86_400_000  # 2025-05-23 local


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "replica"
    write_kuailive_replica(out, SMALL)
    return out, {name: pl.read_csv(out / name) for name in CSV_FILES}


@pytest.fixture(scope="module")
def default():
    started = time.process_time()  # CPU seconds: stable on a busy machine (wall time is not)
    replica = simulate_kuailive_replica(KuaiLiveReplicaConfig())
    return replica, time.process_time() - started


def rooms_of(files: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return files[ROOM_FILE].unique("live_id").select("live_id", pl.col("streamer_id").alias("room_streamer"),
                                                     "start_timestamp", "end_timestamp", "live_content_category")


# ---------------------------------------------------------------------------------- files
def test_write_is_byte_deterministic_and_seed_dependent(small, tmp_path):
    out, _ = small
    again = write_kuailive_replica(tmp_path / "again", SMALL)
    other = write_kuailive_replica(tmp_path / "other", KuaiLiveReplicaConfig(n_users=300, n_streamers=200,
                                                                             n_authors=300, seed=1))
    assert [p.name for p in again] == list(FILES)
    for path, path_other in zip(again, other):
        assert path.read_bytes() == (out / path.name).read_bytes(), path.name
        assert path.read_bytes() != path_other.read_bytes(), path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]  # no temporary folders left


def test_headers_ids_and_millisecond_times(small):
    out, files = small
    for name, header in HEADERS.items():
        assert (out / name).read_text(encoding="utf-8").split("\n", 1)[0] == ",".join(header), name
    events = pl.concat([files[n].select(EVENT_COLUMNS) for n in EVENTS])
    assert events["timestamp"].min() >= WINDOW_START_MS and events["timestamp"].max() < WINDOW_END_MS
    assert events["user_id"].max() < 30_000 and events["streamer_id"].max() < 470_000
    assert events["live_id"].max() < 12_000_000 and files[PHOTO_FILE]["photo_id"].max() < 7_000_000
    assert files[PHOTO_FILE]["timestamp"].min() >= WINDOW_START_MS
    assert set(events["user_id"]) <= set(files[USER_FILE]["user_id"])
    assert set(events["streamer_id"]) <= set(files[STREAMER_FILE]["streamer_id"])
    assert files[USER_FILE]["user_id"].is_unique().all() and files[STREAMER_FILE]["streamer_id"].is_unique().all()


def test_every_event_lies_inside_its_room_window(small):
    _, files = small
    rooms = rooms_of(files)
    for name in EVENTS:
        joined = files[name].join(rooms, on="live_id", how="left")
        assert joined["start_timestamp"].null_count() == 0, name
        assert (joined["streamer_id"] == joined["room_streamer"]).all(), name
        inside = (joined["start_timestamp"] <= joined["timestamp"]) & (joined["timestamp"] < joined["end_timestamp"])
        assert inside.all(), name
    clicks = files[CLICK_FILE].join(rooms, on="live_id")
    assert (clicks["timestamp"] + clicks["watch_live_time"] < clicks["end_timestamp"]).all()  # watch ends in time


def test_room_file_quirks_and_titles(small):
    out, files = small
    room = files[ROOM_FILE]
    assert room.height > room["live_id"].n_unique()  # cross-midnight rooms repeat their live_id per p_date
    repeated = room.filter(pl.col("live_id").is_duplicated())
    assert (repeated.group_by("live_id").agg(pl.col("start_timestamp").n_unique())["start_timestamp"] == 1).all()
    assert 0.03 < (room.unique("live_id")["live_name_id"] == -1).mean() < 0.15
    titles = np.load(out / TITLE_FILE)
    ids = np.unique(room.filter(pl.col("live_name_id") != -1)["live_name_id"].to_numpy())
    assert titles.shape == (len(ids), 128) and titles.dtype == np.float32
    # a streamer's rooms never overlap
    ordered = room.unique("live_id").sort("streamer_id", "start_timestamp")
    same = ordered["streamer_id"][1:].to_numpy() == ordered["streamer_id"][:-1].to_numpy()
    assert (ordered["start_timestamp"][1:].to_numpy()[same] >= ordered["end_timestamp"][:-1].to_numpy()[same]).all()


def test_short_video_domain(small):
    _, files = small
    short, tags = files[PHOTO_FILE], files[PHOTO_TAG_FILE]
    live = files[CLICK_FILE].height + files[NEGATIVE_FILE].height
    assert 7.5 < short["show_cnt"].sum() / live < 10.5  # ~9x the live exposures
    assert short.select("user_id", "photo_id", "p_date").is_unique().all()  # daily aggregate, as in M3
    assert set(short["photo_id"]) <= set(tags["photo_id"])
    assert set(tags["first_level_category_name"]) == set(files[ROOM_FILE]["live_content_category"])
    # authors are people of the streamer id space; many streamers post short videos
    assert short["author_id"].max() < 470_000
    assert len(set(short["author_id"]) & set(files[STREAMER_FILE]["streamer_id"])) > 50
    day = pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Shanghai")
    assert (short.select(day.dt.strftime("%Y%m%d").cast(pl.Int64))["timestamp"] == short["p_date"]).all()


def test_titles_tell_the_room_topic():
    replica = simulate_kuailive_replica(SMALL)
    rooms = replica.rooms.filter(pl.col("live_name_id") >= 0).unique("live_name_id").sort("live_name_id")
    titles, topic = replica.title_embeddings, rooms["topic"].to_numpy()
    assert len(titles) == rooms.height
    # nearest topic centroid recovers the topic of (almost) every title: content semantics a model can use
    centroids = np.stack([titles[topic == k].mean(0) for k in range(SMALL.n_topics)])
    assert (np.argmax(titles @ centroids.T, axis=1) == topic).mean() > 0.9


def test_validate_rejects_bad_configs():
    for bad in ({"n_topics": 1}, {"click_rate": 0.0}, {"n_users": 40_000}, {"drift_rate": 1.5}):
        with pytest.raises(ValueError):
            simulate_kuailive_replica(KuaiLiveReplicaConfig(**bad))


# ---------------------------------------------------------------------------------- size, rates
def test_default_size_rates_and_heavy_tails(default):
    replica, seconds = default
    assert seconds < 6.0  # CPU seconds; about 3 on an idle core
    tables, exposures = replica.tables, replica.exposures
    assert 85_000 < exposures.height < 115_000
    assert abs(exposures["clicked"].mean() - 0.2) < 0.01
    clicks = tables[CLICK_FILE]
    for name, target in ((COMMENT_FILE, 0.10), (LIKE_FILE, 0.12), (GIFT_FILE, 0.04)):
        per_click = tables[name].select("user_id", "live_id").n_unique() / clicks.height
        assert 0.6 * target < per_click < 1.2 * target, name
    watch = clicks["watch_live_time"].to_numpy()
    assert 0.25 < (watch > 60_000).mean() < 0.5 and np.percentile(watch, 99) > 15 * np.median(watch)
    price = tables[GIFT_FILE]["gift_price"].to_numpy()
    assert price.min() >= 1 and price.max() > 50 * np.median(price)


# ---------------------------------------------------------------------------------- planted signal
def test_short_video_interest_predicts_live_clicks(default):
    replica, _ = default
    tables = replica.tables
    category = tables[ROOM_FILE].unique("live_id").select("live_id", pl.col("live_content_category").alias("category"))
    past = (tables[PHOTO_FILE].filter(pl.col("timestamp") < TEST_START_MS)
            .join(tables[PHOTO_TAG_FILE].select("photo_id", pl.col("first_level_category_name").alias("category")),
                  on="photo_id"))
    share = past.group_by("user_id", "category").agg(pl.len().alias("n")).with_columns(
        share=pl.col("n") / pl.col("n").sum().over("user_id"))
    same_author = past.group_by("user_id", pl.col("author_id").alias("streamer_id")).agg(pl.len().alias("n_aid"))
    test = (replica.exposures.filter(pl.col("timestamp") >= TEST_START_MS).join(category, on="live_id")
            .join(share, on=["user_id", "category"], how="left")
            .join(same_author, on=["user_id", "streamer_id"], how="left")
            .with_columns(pl.col("share", "n_aid").fill_null(0)))
    # the user's short-video share of the candidate's category ranks the live clicks
    assert auc(test["share"].to_numpy(), test["clicked"].to_numpy()) > 0.6
    # having watched the streamer's short videos raises the live click rate
    fans, others = test.filter(pl.col("n_aid") >= 5), test.filter(pl.col("n_aid") == 0)
    assert fans.height > 1000 and fans["clicked"].mean() > others["clicked"].mean() + 0.02


def recent_room_gauc(config: KuaiLiveReplicaConfig) -> float:
    """Room-grouped AUC of the room's click rate over the previous 5 minutes (>= 3 shows), i.e. how well
    what just happened IN THE SAME ROOM ranks the clicks; 0.5 if the click rate were constant per room."""
    exposures = simulate_kuailive_replica(config).exposures.sort("live_id", "timestamp")
    room, t = exposures["live_id"].to_numpy(), exposures["timestamp"].to_numpy()
    clicked = exposures["clicked"].to_numpy().astype(float)
    key = room.astype(np.int64) * (1 << 42) + (t - WINDOW_START_MS)
    before = np.searchsorted(key, key, side="left")
    since = np.searchsorted(key, key - 5 * 60_000, side="left")
    shows, clicks = before - since, np.r_[0, np.cumsum(clicked)][before] - np.r_[0, np.cumsum(clicked)][since]
    seen = shows >= 3
    return gauc(clicks[seen] / shows[seen], clicked[seen], room[seen], weight="impressions")


def test_click_rate_depends_on_the_current_segment(default):
    replica, _ = default
    exposures = replica.exposures.with_columns(
        within=pl.col("segment_quality") - pl.col("segment_quality").mean().over("live_id"))
    # hidden: inside a room, the current segment's quality ranks the clicks
    assert auc(exposures["within"].to_numpy(), exposures["clicked"].to_numpy()) > 0.6
    # observable: the room's last 5 minutes rank clicks inside the room, far less so when content does not drift
    light = {"n_users": 2400, "short_per_live": 0.3}  # more users: denser rooms; short videos play no part
    drifting = recent_room_gauc(KuaiLiveReplicaConfig(**light))
    constant = recent_room_gauc(KuaiLiveReplicaConfig(**light, segment_quality_sd=0.0, drift_rate=0.0))
    assert drifting > 0.54 and drifting > constant + 0.03
