"""Synthetic replica of KuaiLive-M3 (live streaming + short video, Kuaishou), in the published file layout.

The content is DERIVED from the KuaiLive replica (`recbench.data.kuailive_replica`): the same people,
rooms, drifting room segments, live exposures and short-video plays, so the planted signals (the moment
inside a room, short-video interest -> live clicks, content semantics) carry over. Only the file
layout changes, to the one documented by imgkkk574/KuaiLive-M3 (`website/app/dataset-fields.ts`,
`klm3.py`; data on Hugging Face imgkkk2004/KuaiLive-M3).

`write_kuailive_m3_replica(out_dir, config)` writes (byte-deterministic for a config; atomically):

- ``user_id_set.csv``: ``user_id``;
- ``author_profile.csv``: ``author_id,is_photo_author,is_live_author,gender,age_segment,fans_user_num``
  (streamers and short-video-only creators share one id space);
- ``live_interaction.csv``: one row per watch session (a clicked live exposure): ``user_id,author_id,
  live_id,live_play_start_timestamp,live_play_end_timestamp,p_date,live_source_category,enter_live_action,
  is_auto_play,is_follow_enter,is_follow_leave,play_duration,like_cnt,comment_cnt,send_gift_cnt,
  send_gift_num,follow_author_cnt,cancel_follow_author_cnt,share_cnt,report_live_cnt``; the two
  timestamps are local (Asia/Shanghai) datetime strings ``2025-05-05 20:10:05.123`` (the official loader
  parses them with pandas ``parse_dates``); ``play_duration`` in ms; the counts come from the session's
  comment / like / gift events (M3 publishes no gift event table);
- ``live_show.parquet``: impressions without entering: ``live_id,user_id,author_id,show_timestamp``
  (timestamp[ms, Asia/Shanghai]);
- ``live_comment.csv``: ``live_stream_id,user_id,author_id,content,comment_ts`` (Unix ms int; the text
  names the topic of the room's current segment);
- ``live_like.csv``: ``user_id,live_id,like_timestamp`` (datetime string);
- ``live_room_set.csv``: ``live_id``;
- ``live_room_meta.parquet``: ``live_id,author_id,live_name,start_timestamp,end_timestamp,live_duration``;
  a room crossing local midnight has one row per date (same window; ``live_duration`` = that date's part);
  ``live_name`` is empty for rooms without a title;
- ``live_emb_64.parquet``: ``live_id,embedding`` (list[float32], 64): room topic + streamer style + noise;
- ``live_emb_128_ts/live_emb_128_ts_part{k}.parquet``: ``live_stream_id`` (str), ``segment_id`` (str),
  ``feature_128`` (list[float32], 128), ``timestamp`` (Unix ms int, the END of the segment). Pieces of
  ``segment_seconds`` aligned to the room start; the content is the planted segment's topic direction +
  its quality + its sub-topic and room event (what moves clicks beyond the category and the author: the base
  replica's LLM-Alignment premise) + the streamer's style + noise. M3 keeps "segments with at least one viewer"; the replica
  keeps the piece that ended last before each live exposure (that is what an adapter reads; the file
  stays small);
- ``photo_interaction.csv``: the M3 daily aggregate columns plus ``p_date`` (no time of day);
- ``photo_play.parquet``: one play event per daily row: ``user_id,photo_id,author_id,enter_timestamp,
  leave_timestamp,enter_play_type,is_complete_play,like_status_type,is_follow_before_play,
  is_follow_after_play`` (timestamps timestamp[ms, Asia/Shanghai]);
- ``photo_tag.csv``: 4-level taxonomy (first level = the live topic names);
- ``photo_id_set.csv`` and ``photo_meta.parquet`` (``photo_id,author_id,duration,display_type,
  cover_title,video_texts``; text for the text stage).
Not written (not read by recbench): live_share, live_questionnaire, photo_emb_128.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recbench.data import kuailive_replica as base
from recbench.records import atomic_folder

USER_SET_FILE, AUTHOR_FILE = "user_id_set.csv", "author_profile.csv"
INTERACTION_FILE, SHOW_FILE = "live_interaction.csv", "live_show.parquet"
COMMENT_FILE, LIKE_FILE = "live_comment.csv", "live_like.csv"
ROOM_SET_FILE, ROOM_META_FILE = "live_room_set.csv", "live_room_meta.parquet"
ROOM_EMB_FILE, SEGMENT_DIR = "live_emb_64.parquet", "live_emb_128_ts"
PHOTO_FILE, PHOTO_PLAY_FILE, PHOTO_TAG_FILE = "photo_interaction.csv", "photo_play.parquet", "photo_tag.csv"
PHOTO_SET_FILE, PHOTO_META_FILE = "photo_id_set.csv", "photo_meta.parquet"
LOCAL_TZ = "Asia/Shanghai"
SEGMENT_DIM, ROOM_DIM = 128, 64

INTERACTION_COLUMNS = ("user_id", "author_id", "live_id", "live_play_start_timestamp", "live_play_end_timestamp",
                       "p_date", "live_source_category", "enter_live_action", "is_auto_play", "is_follow_enter",
                       "is_follow_leave", "play_duration", "like_cnt", "comment_cnt", "send_gift_cnt",
                       "send_gift_num", "follow_author_cnt", "cancel_follow_author_cnt", "share_cnt",
                       "report_live_cnt")
SOURCES = ("feed", "follow", "nearby", "search", "profile", "live_square")
TOPIC_WORDS = {"chat": "聊天", "shop": "好物", "game": "游戏", "music": "唱歌", "dance": "跳舞", "outdoor": "户外",
               "food": "美食", "sports": "体育", "talent": "才艺", "education": "知识", "beauty": "美妆", "pk": "PK",
               "pets": "萌宠", "auto": "汽车"}
COMMENT_TEMPLATES = ("这个{w}太好看了", "主播的{w}真不错", "来了来了{w}", "{w}666", "喜欢这种{w}", "再来一段{w}")
M3_FANS = {"0-10": "0-1k", "10-100": "0-1k", "100-1000": "0-1k", "1000-10000": "1k-1w", "10000-100000": "1w-10w",
           "100000-1000000": "10w-100w", "1000000-10000000": "100w-1000w"}


@dataclass(frozen=True)
class KuaiLiveM3ReplicaConfig:
    """Knobs of the KuaiLive-M3 replica; the first six are passed to the KuaiLive replica generator."""

    n_users: int = 600
    n_streamers: int = 500
    n_authors: int = 1000
    live_exposures_per_user: float = 40.0
    short_per_live: float = 9.0  # short-video plays per live exposure (Kuaishou: ~90% vs ~10% of exposures)
    seed: int = 0
    segment_seconds: float = 30.0  # length of a live_emb_128_ts segment
    shards: int = 2  # live_emb_128_ts_part*.parquet files

    def base(self) -> base.KuaiLiveReplicaConfig:
        return base.KuaiLiveReplicaConfig(n_users=self.n_users, n_streamers=self.n_streamers,
                                          n_authors=self.n_authors, live_exposures_per_user=self.live_exposures_per_user,
                                          short_per_live=self.short_per_live, seed=self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def segment_files(shards: int) -> list[str]:
    return [f"{SEGMENT_DIR}/{SEGMENT_DIR}_part{k}.parquet" for k in range(shards)]


def files(config: KuaiLiveM3ReplicaConfig) -> list[str]:
    return [USER_SET_FILE, AUTHOR_FILE, INTERACTION_FILE, SHOW_FILE, COMMENT_FILE, LIKE_FILE, ROOM_SET_FILE,
            ROOM_META_FILE, ROOM_EMB_FILE, *segment_files(config.shards), PHOTO_FILE, PHOTO_PLAY_FILE, PHOTO_TAG_FILE,
            PHOTO_SET_FILE, PHOTO_META_FILE]


def _local(ms: pl.Expr) -> pl.Expr:
    return pl.from_epoch(ms, "ms").dt.replace_time_zone("UTC").dt.convert_time_zone(LOCAL_TZ)


def _local_text(ms: pl.Expr) -> pl.Expr:
    return _local(ms).dt.strftime("%Y-%m-%d %H:%M:%S%.3f")


def _per_session(clicks: pl.DataFrame, events: pl.DataFrame, **aggs: pl.Expr) -> pl.DataFrame:
    """Each event belongs to the user's latest session in that room started at or before it."""
    return (events.sort("timestamp")
            .join_asof(clicks.select("user_id", "live_id", "timestamp", "session").sort("timestamp"),
                       on="timestamp", by=["user_id", "live_id"], strategy="backward", check_sortedness=False)
            .filter(pl.col("session").is_not_null()).group_by("session").agg(**aggs))


def simulate_kuailive_m3_replica(config: KuaiLiveM3ReplicaConfig) -> dict[str, pl.DataFrame]:
    """{relative file name: table}; parquet files for names ending in .parquet, CSV otherwise."""
    if config.segment_seconds <= 0 or config.shards < 1:
        raise ValueError("KuaiLiveM3ReplicaConfig: segment_seconds must be > 0 and shards >= 1")
    replica = base.simulate_kuailive_replica(config.base())
    t = replica.tables
    # One generator for every phase: the phases must keep this order.
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 31]))
    words = np.asarray([TOPIC_WORDS[n] for n in replica.topic_names])
    segments = replica.segments.sort("start_ms")
    out: dict[str, pl.DataFrame] = {USER_SET_FILE: pl.DataFrame({"user_id": replica.user_ids})}
    out[INTERACTION_FILE] = _live_sessions(rng, t)
    out[SHOW_FILE] = t[base.NEGATIVE_FILE].select("live_id", "user_id", pl.col("streamer_id").alias("author_id"),
                                                  _local(pl.col("timestamp")).dt.cast_time_unit("ms").alias("show_timestamp"))
    out[COMMENT_FILE] = _comments(rng, t, segments, words)
    out[LIKE_FILE] = t[base.LIKE_FILE].select("user_id", "live_id", _local_text(pl.col("timestamp")).alias("like_timestamp"))
    rooms = replica.rooms.sort("live_id")
    out |= _room_meta(t, rooms, words)
    out |= _room_embeddings(rng, config, replica.exposures, rooms, segments, len(words))
    out |= _short_videos(rng, t)
    out[AUTHOR_FILE] = _creators(rng, t)
    return out


def _live_sessions(rng: np.random.Generator, t: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """live_interaction: one row per watch session (a click) with the counts of its events."""
    clicks = t[base.CLICK_FILE].with_row_index("session")
    n = clicks.height
    counts = [_per_session(clicks, t[base.COMMENT_FILE], comment_cnt=pl.len()),
              _per_session(clicks, t[base.LIKE_FILE], like_cnt=pl.len()),
              _per_session(clicks, t[base.GIFT_FILE], send_gift_cnt=pl.len(), send_gift_num=pl.col("gift_price").sum())]
    sessions = clicks
    for frame in counts:
        sessions = sessions.join(frame, on="session", how="left", maintain_order="left")
    auto = rng.random(n) < 0.3
    sessions = sessions.with_columns(
        pl.col("comment_cnt", "like_cnt", "send_gift_cnt", "send_gift_num").fill_null(0).cast(pl.Int64),
        live_source_category=pl.Series(np.asarray(SOURCES)[rng.choice(len(SOURCES), n, p=[.55, .2, .08, .07, .05, .05])]),
        enter_live_action=pl.Series(np.where(auto, "auto-enter", np.where(rng.random(n) < 0.6, "click", "slide"))),
        is_auto_play=pl.Series(auto.astype(np.int64)))
    zero = pl.lit(0, pl.Int64)
    return sessions.select(
        "user_id", pl.col("streamer_id").alias("author_id"), "live_id",
        _local_text(pl.col("timestamp")).alias("live_play_start_timestamp"),
        _local_text(pl.col("timestamp") + pl.col("watch_live_time")).alias("live_play_end_timestamp"),
        _local(pl.col("timestamp")).dt.strftime("%Y%m%d").cast(pl.Int64).alias("p_date"),
        "live_source_category", "enter_live_action", "is_auto_play", zero.alias("is_follow_enter"),
        zero.alias("is_follow_leave"), pl.col("watch_live_time").alias("play_duration"), "like_cnt", "comment_cnt",
        "send_gift_cnt", "send_gift_num", zero.alias("follow_author_cnt"), zero.alias("cancel_follow_author_cnt"),
        zero.alias("share_cnt"), zero.alias("report_live_cnt"))


def _comments(rng: np.random.Generator, t: dict[str, pl.DataFrame], segments: pl.DataFrame,
              words: np.ndarray) -> pl.DataFrame:
    """live_comment: each comment's text names the topic of the room's segment at that time."""
    comments = (t[base.COMMENT_FILE].sort("timestamp")
                .join_asof(segments.select("live_id", "start_ms", "topic"), left_on="timestamp", right_on="start_ms",
                           by="live_id", strategy="backward", check_sortedness=False)
                .sort("timestamp", "user_id", "live_id", maintain_order=True))
    template = np.asarray(COMMENT_TEMPLATES)[rng.integers(0, len(COMMENT_TEMPLATES), comments.height)]
    text = [tpl.format(w=w) for tpl, w in zip(template, words[comments["topic"].to_numpy()])]
    return comments.select(pl.col("live_id").alias("live_stream_id"), "user_id",
                           pl.col("streamer_id").alias("author_id"), pl.Series("content", text),
                           pl.col("timestamp").alias("comment_ts"))


def _room_meta(t: dict[str, pl.DataFrame], rooms: pl.DataFrame, words: np.ndarray) -> dict[str, pl.DataFrame]:
    """The room set and the room meta (one row per local date; the title names the room's topic)."""
    out: dict[str, pl.DataFrame] = {}
    out[ROOM_SET_FILE] = rooms.select("live_id")
    day_start = (pl.col("p_date").cast(pl.String).str.to_date("%Y%m%d").cast(pl.Datetime("ms"))
                 .dt.replace_time_zone(LOCAL_TZ).dt.epoch("ms"))
    titles = rooms.select("live_id", pl.Series("word", words[rooms["topic"].to_numpy()]))
    out[ROOM_META_FILE] = (t[base.ROOM_FILE].join(titles, on="live_id", how="left", maintain_order="left")
                           .with_columns(day_start=day_start)
                           .select("live_id", pl.col("streamer_id").alias("author_id"),
                                   pl.when(pl.col("live_name_id") < 0).then(pl.lit(""))
                                   .otherwise(pl.col("word") + pl.lit("直播间 #")
                                              + (pl.col("live_name_id") % 997).cast(pl.String)).alias("live_name"),
                                   _local(pl.col("start_timestamp")).dt.cast_time_unit("ms").alias("start_timestamp"),
                                   _local(pl.col("end_timestamp")).dt.cast_time_unit("ms").alias("end_timestamp"),
                                   (pl.min_horizontal("end_timestamp", pl.col("day_start") + base.DAY_MS)
                                    - pl.max_horizontal("start_timestamp", "day_start")).alias("live_duration")))
    return out


def _room_embeddings(rng: np.random.Generator, config: KuaiLiveM3ReplicaConfig, exposures: pl.DataFrame,
                     rooms: pl.DataFrame, segments: pl.DataFrame, n_topics: int) -> dict[str, pl.DataFrame]:
    """Room-level embeddings and the segment-level ones (the piece that ended last before each exposure)."""
    out: dict[str, pl.DataFrame] = {}
    streamers = np.unique(rooms["streamer_id"].to_numpy())
    style64 = rng.normal(0.0, 1.0, (len(streamers), ROOM_DIM))
    style128 = rng.normal(0.0, 1.0, (len(streamers), SEGMENT_DIM))
    topic64 = rng.normal(0.0, 1.0, (n_topics, ROOM_DIM))
    topic128 = rng.normal(0.0, 1.0, (n_topics, SEGMENT_DIM))
    quality128 = rng.normal(0.0, 1.0, SEGMENT_DIM)
    # what the segment shows beyond its category (the base replica's sub-topic / room event, which move
    # clicks and are named only by segment_text.csv there): here the shipped embedding carries them
    subtopic128 = rng.normal(0.0, 1.0, (int(segments["subtopic"].max()) + 1, SEGMENT_DIM))
    event128 = rng.normal(0.0, 1.0, (int(segments["event"].max()) + 1, SEGMENT_DIM))
    who = np.searchsorted(streamers, rooms["streamer_id"].to_numpy())
    room_emb = (topic64[rooms["topic"].to_numpy()] + 0.5 * style64[who]
                + 0.4 * rng.normal(0.0, 1.0, (rooms.height, ROOM_DIM))) / np.sqrt(ROOM_DIM)
    out[ROOM_EMB_FILE] = pl.DataFrame({"live_id": rooms["live_id"],
                                       "embedding": pl.Series(room_emb.astype(np.float32)).arr.to_list()})
    piece_ms = round(config.segment_seconds * 1000)
    pieces = (exposures.select("live_id", "timestamp")
              .join(rooms.select("live_id", "streamer_id", "start_ms"), on="live_id")
              .with_columns(k=(pl.col("timestamp") - pl.col("start_ms")) // piece_ms - 1)
              .filter(pl.col("k") >= 0).select("live_id", "streamer_id", "start_ms", "k").unique()
              .sort("live_id", "k")
              .with_columns(end=pl.col("start_ms") + (pl.col("k") + 1) * piece_ms,
                            mid=pl.col("start_ms") + pl.col("k") * piece_ms + piece_ms // 2))
    pieces = (pieces.sort("mid")
              .join_asof(segments.select("live_id", "start_ms", "topic", "quality", "subtopic", "event").rename({"start_ms": "seg_start"}),
                         left_on="mid", right_on="seg_start", by="live_id", strategy="backward", check_sortedness=False)
              .sort("live_id", "k"))
    seg_emb = (topic128[pieces["topic"].to_numpy()] + 0.6 * pieces["quality"].to_numpy()[:, None] * quality128
               + 0.8 * subtopic128[pieces["subtopic"].to_numpy()] + 0.8 * event128[pieces["event"].to_numpy()]
               + 0.5 * style128[np.searchsorted(streamers, pieces["streamer_id"].to_numpy())]
               + 0.4 * rng.normal(0.0, 1.0, (pieces.height, SEGMENT_DIM))) / np.sqrt(SEGMENT_DIM)
    segment_table = pl.DataFrame({
        "live_stream_id": pieces["live_id"].cast(pl.String),
        "segment_id": (pieces["live_id"] * 1000 + pieces["k"]).cast(pl.String),
        "feature_128": pl.Series(seg_emb.astype(np.float32)).arr.to_list(),
        "timestamp": pieces["end"]})
    bounds = np.linspace(0, segment_table.height, config.shards + 1).astype(int)
    for name, lo, hi in zip(segment_files(config.shards), bounds[:-1], bounds[1:]):
        out[name] = segment_table[lo:hi]
    return out


def _short_videos(rng: np.random.Generator, t: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Short videos: the daily aggregate (no time of day), play events, taxonomy, meta."""
    out: dict[str, pl.DataFrame] = {}
    photos = t[base.PHOTO_FILE]
    out[PHOTO_FILE] = photos.drop("timestamp")
    m = photos.height
    duration = np.maximum(rng.lognormal(np.log(55_000.0), 0.6, m), 3_000).astype(np.int64)
    watched = (duration * photos["play_progress"].to_numpy()).astype(np.int64)
    zero = pl.lit(0, pl.Int64)
    out[PHOTO_PLAY_FILE] = photos.select(
        "user_id", "photo_id", "author_id", _local(pl.col("timestamp")).dt.cast_time_unit("ms").alias("enter_timestamp"),
        _local(pl.col("timestamp") + pl.Series(watched)).dt.cast_time_unit("ms").alias("leave_timestamp"),
        pl.Series("enter_play_type", np.where(rng.random(m) < 0.8, "slide", "click")),
        (pl.col("complete_play_cnt") > 0).cast(pl.Int64).alias("is_complete_play"),
        pl.when(pl.col("like_cnt") > 0).then(1).otherwise(3).cast(pl.Int64).alias("like_status_type"),
        zero.alias("is_follow_before_play"), (pl.col("follow_cnt") > 0).cast(pl.Int64).alias("is_follow_after_play"))
    tags = t[base.PHOTO_TAG_FILE]
    out[PHOTO_TAG_FILE] = tags
    out[PHOTO_SET_FILE] = tags.select("photo_id")
    played = photos.group_by("photo_id").agg(pl.col("author_id").first()).sort("photo_id")
    meta = played.join(tags.select("photo_id", "first_level_category_name"), on="photo_id", how="left")
    meta_words = meta["first_level_category_name"].replace_strict(list(TOPIC_WORDS), list(TOPIC_WORDS.values()),
                                                                  default="")
    out[PHOTO_META_FILE] = meta.select(
        "photo_id", "author_id", pl.Series("duration", np.maximum(rng.lognormal(np.log(55_000.0), 0.6, meta.height),
                                                                  3_000).astype(np.int64)),
        pl.lit(1, pl.Int64).alias("display_type"), (meta_words + "日常分享").alias("cover_title"),
        pl.lit("", pl.String).alias("video_texts"))
    return out


def _creators(rng: np.random.Generator, t: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """author_profile: live streamers and short-video-only authors in one id space."""
    s = t[base.STREAMER_FILE]
    posting = set(t[base.PHOTO_FILE]["author_id"].unique().to_list())
    live_authors = s.select(pl.col("streamer_id").alias("author_id"),
                            pl.col("streamer_id").is_in(list(posting)).cast(pl.Int64).alias("is_photo_author"),
                            pl.lit(1, pl.Int64).alias("is_live_author"),
                            pl.col("gender").replace({"UNKNOWN": "U"}), pl.col("age").alias("age_segment"),
                            pl.col("fans_user_num").replace_strict(M3_FANS, default="0-1k"))
    others = np.sort(np.asarray(sorted(posting - set(s["streamer_id"].to_list())), dtype=np.int64))
    k = len(others)
    photo_only = pl.DataFrame({
        "author_id": others, "is_photo_author": np.ones(k, np.int64), "is_live_author": np.zeros(k, np.int64),
        "gender": np.asarray(("M", "F", "U"))[rng.choice(3, k, p=[0.5, 0.45, 0.05])],
        "age_segment": np.asarray(base.AGES)[rng.choice(len(base.AGES) - 1, k)],
        "fans_user_num": np.asarray(("0-1k", "1k-1w", "1w-10w"))[rng.choice(3, k, p=[0.6, 0.3, 0.1])]})
    return pl.concat([live_authors, photo_only]).sort("author_id")


def write_kuailive_m3_replica(out_dir: Path, config: KuaiLiveM3ReplicaConfig) -> list[Path]:
    """Write the replica into `out_dir` atomically (temp folder + rename); return the paths.
    Byte-for-byte deterministic for a given config (and polars version)."""
    tables = simulate_kuailive_m3_replica(config)
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        (tmp / SEGMENT_DIR).mkdir()
        for name, table in tables.items():
            if name.endswith(".parquet"):
                table.write_parquet(tmp / name, statistics=False)
            else:
                table.write_csv(tmp / name)
    return [out_dir / name for name in tables]
