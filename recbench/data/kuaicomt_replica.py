"""Synthetic replica of KuaiComt (Kuaishou short videos + comment sections), in the documented file layout.

`write_kuaicomt_replica(out_dir, config)` writes five comma-separated UTF-8 files with a header row:

- ``user_video_inter.csv``: one row per video impression, ``user_id,video_id,p_hourmin,time_ms,is_click,
  is_like,is_follow,is_comment,is_forward,is_collect,is_hate,long_view,play_time_ms,duration_ms,
  profile_stay_time,comment_stay_time``. ``time_ms`` is a float Unix time in ms inside 2023-09-30 ..
  2023-11-03 (Asia/Shanghai), ``p_hourmin`` the local hour as HH00, ``long_view`` = 1 iff
  ``play_time_ms >= duration_ms`` (duration <= 18 s) or ``play_time_ms >= 18000`` (longer videos),
  ``comment_stay_time`` the time in the comment section in ms, 0 when it was not opened (THE LCU label);
- ``user_comment_inter.csv``: ``user_id,comment_id,time_stamp,photo_id,is_like,is_reply``, only positive
  comment interactions, ``time_stamp`` in Unix SECONDS, ``photo_id`` = the video id;
- ``user_features.csv``: ``user_id,user_active_degree,is_live_author,produce_video_num,follow_count,
  follow_user_num_range,fans_count,fans_user_num_range,friend_user_num_range,register_days,gender,
  age_range,onehot_feat0..onehot_feat18`` with the documented category strings, plus the undocumented
  ``user_active_degree`` values that the LCU code maps ('2_14_day_new', 'low_active', ...);
- ``video_features.csv``: ``video_id,author_id,video_type,upload_dt,caption,duration,category``
  (NORMAL/AD, "YYYY-MM-DD", Chinese caption with #hashtags, duration in ms as a float, Chinese category);
- ``comment_features.csv``: ``comment_id,comment_content,video_id,comment_like_cnt,comment_reply_out,
  show_comment_cnt_td`` (>= ``min_comments_per_video`` comments per video, Chinese text with bracket
  emoji tokens such as ``[捂脸]``, heavy-tailed like counts).

Raw ids are distinct random int64 of real magnitude (users and authors 1e8..3e9, videos 1e10..1.2e11,
comments 1e10..5e11). Every (user, video) pair has at most one impression, so a comment interaction
maps to exactly one impression through (user_id, photo_id).

Generative model (vectorised numpy; byte-deterministic for a given config)
-----------------------------------------------------------------------
Topics. ``n_topics`` topics, each with a Chinese category string, a hashtag and 15 topic words. Texts
are built from the topic words plus topic-free filler words, bracket emoji and punctuation, so a text
model can tell the topics apart (captions carry the video's topic, comments their own topic).

Users. Each user has a hidden AFFINITY per topic (standard normal plus a small age/gender tilt); a topic
is "on-interest" for the user when its affinity is > 0. The recommender draws ``rec_precision`` of a
user's impressions from the topics weighted by softmax(``interest_sharpness`` * affinity), the rest by
global topic popularity; a video is then drawn by Zipf popularity inside the topic. Each user also has
a hidden comment PROPENSITY (normal, shared by opening, staytime and comment interactions, so staytime
rises with the user's number of comment interactions, as in the paper's data analysis).

Videos and comments. Each video has a topic, a "drift" topic, and a share of off-topic comments
(Beta around ``off_topic_rate``): a comment is on the video's topic, else on the drift topic (mostly)
or a random topic. Comment like counts are lognormal (scaled by the video's popularity) and made
distinct inside a video, so "the most-liked comments" is well defined. The comments a user SEES when
opening the section are the video's ``shown_comments`` most-liked ones, plus one more for every
``scroll_s_per_comment`` seconds of stay (the downstream adapter shows the user's interacted comments
first, then the most-liked others).

PLANTED SIGNAL (what LCU's comment understanding can exploit). Let ``top_relevance`` be the mean
affinity of the user to the topics of the video's ``shown_comments`` most-liked comments and
``video_relevance`` the affinity to the video's topic. Then

- open:  ``logit = b + open_relevance_weight * top_relevance + open_video_weight * video_relevance
  + propensity`` (only clicked impressions can open; b is calibrated to ``comment_open_rate``);
- staytime (ms, when open): lognormal, ``log = log(stay_median_s * 1000) + stay_relevance_weight *
  top_relevance + stay_video_weight * video_relevance + stay_likes_weight * z(log mean top-comment
  likes) + stay_propensity_weight * propensity + stay_duration_weight * z(log duration) + noise``
  (all terms centred on the opened impressions, so the median is about ``stay_median_s``); the
  likes term is negative: staytime falls mildly as the top comments' average likes rise;
- comment interactions: each SEEN comment is liked/replied with ``logit = b + interaction_relevance_weight
  * affinity(user, comment topic) + propensity - interaction_rank_decay * like rank`` (b calibrated to
  ``interactions_per_open``), at a time inside the impression's comment stay.

Because comment topics differ from the video topic for ~30% of the comments (and per-video drift
concentrates them), ``top_relevance`` carries information beyond the video topic alone.

Video feedback is plausible, with calibrated rates: click ~88%, like ~5%, follow ~0.5%, forward ~1%,
collect ~0.8%, hate ~0.2%, profile visit ~3%; ``is_comment`` is 1 for impressions with a reply, plus a
few opened sections where the user wrote a top-level comment. Timing: impressions form sessions
(geometric length), sessions start at a diurnal local hour, consecutive impressions follow each other
by the time spent on the previous one (play, comment stay) plus a short gap.

NOTE: the real log has ~0.06 comment interactions per opened section (1.0M / 16.0M); the replica RAISES
it (``interactions_per_open`` = 0.4) so that the user-specific comment ranking task has enough labels on
a small replica.

Default size: 1,500 users, 1,200 videos, ~84K comments (55..~125 per video), ~85K impressions (~57
per user, heavy-tailed), ~4.6K comment interactions; simulated in ~0.7 s, written (~14 MB) in ~0.7 s.
Measured at the default size (seeds 0-4): open rate 13.3-13.5%, open staytime median ~6 s (p90 ~31 s,
p99 ~120 s); Spearman(top_relevance, staytime | open) 0.39-0.44, 0.19-0.21 after partialling out the
video-topic relevance; on-interest comments are interacted with 5.6-8.7x as often as off-interest ones.

`simulate_kuaicomt_replica(config)` returns the same tables in memory plus the hidden values (user
affinities, video/comment topics, per-impression relevance, seen comments), for tests and oracle checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recbench.data.base import write_csv_folder
from recbench.data.sampling import (distinct_ids, first_occurrence, rank_in_segment, sample_weighted,
                                    sample_within, segment_starts, shuffled_zipf, sigmoid, zipf)

USER_VIDEO_FILE = "user_video_inter.csv"
USER_COMMENT_FILE = "user_comment_inter.csv"
USER_FEATURES_FILE = "user_features.csv"
VIDEO_FEATURES_FILE = "video_features.csv"
COMMENT_FEATURES_FILE = "comment_features.csv"
FILES = (USER_VIDEO_FILE, USER_COMMENT_FILE, USER_FEATURES_FILE, VIDEO_FEATURES_FILE, COMMENT_FEATURES_FILE)

FEEDBACK_COLUMNS = ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_collect", "is_hate")
USER_VIDEO_COLUMNS = ("user_id", "video_id", "p_hourmin", "time_ms", *FEEDBACK_COLUMNS, "long_view",
                      "play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time")
USER_COMMENT_COLUMNS = ("user_id", "comment_id", "time_stamp", "photo_id", "is_like", "is_reply")
ONEHOT_CARDINALITIES = (55, 1686, 6, 10, 3, 53, 392, 7, 5, 7, 2, 2, 2, 2, 2, 2, 2, 2, 5)  # documented
USER_FEATURE_COLUMNS = ("user_id", "user_active_degree", "is_live_author", "produce_video_num", "follow_count",
                        "follow_user_num_range", "fans_count", "fans_user_num_range", "friend_user_num_range",
                        "register_days", "gender", "age_range",
                        *(f"onehot_feat{k}" for k in range(len(ONEHOT_CARDINALITIES))))
VIDEO_FEATURE_COLUMNS = ("video_id", "author_id", "video_type", "upload_dt", "caption", "duration", "category")
COMMENT_FEATURE_COLUMNS = ("comment_id", "comment_content", "video_id", "comment_like_cnt", "comment_reply_out",
                           "show_comment_cnt_td")

# Time window: local (Asia/Shanghai, UTC+8) 2023-09-30 00:00 .. 2023-11-03 24:00.
FIRST_DAY = np.datetime64("2023-09-30")
N_DAYS = 35
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WINDOW_START_MS = int((FIRST_DAY.astype("datetime64[ms]") - np.timedelta64(8, "h")).astype(np.int64))
WINDOW_END_MS = WINDOW_START_MS + N_DAYS * DAY_MS
LONG_VIEW_MS = 18_000  # long_view threshold for videos longer than 18 s

# (category string written to video_features.category, hashtag, 15 topic words). Words are unique
# across topics so that a bag-of-words model can separate the topics.
TOPICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("美食", "美食", ("火锅", "红烧肉", "小龙虾", "烧烤", "奶茶", "饺子", "面条", "蛋糕", "香辣", "厨师",
                    "下饭", "食谱", "外卖", "早餐", "馋哭")),
    ("旅游", "旅行", ("风景", "海边", "雪山", "古镇", "攻略", "打卡", "酒店", "机票", "自驾", "日出",
                    "民宿", "景区", "草原", "露营", "背包")),
    ("宠物", "萌宠", ("猫咪", "狗狗", "铲屎官", "喵星人", "柯基", "布偶猫", "猫粮", "遛狗", "撸猫", "金毛",
                    "仓鼠", "兔子", "主子", "毛孩子", "狗粮")),
    ("游戏", "游戏", ("王者荣耀", "和平精英", "上分", "段位", "五杀", "打野", "开黑", "皮肤", "队友", "装备",
                    "通关", "英雄", "原神", "手残", "副本")),
    ("音乐", "音乐", ("翻唱", "歌词", "旋律", "吉他", "钢琴", "副歌", "嗓音", "演唱会", "单曲循环", "歌手",
                    "原唱", "高音", "伴奏", "民谣", "耳机")),
    ("明星娱乐", "娱乐", ("明星", "偶像", "综艺", "粉丝", "饭圈", "红毯", "颜值", "热搜", "八卦", "演员",
                      "爱豆", "官宣", "出道", "绯闻", "应援")),
    ("体育", "体育", ("篮球", "足球", "进球", "球员", "比赛", "冠军", "国足", "扣篮", "裁判", "球迷",
                    "乒乓球", "奥运", "教练", "世界杯", "射门")),
    ("科技数码", "数码", ("手机", "芯片", "电脑", "拍照", "续航", "快充", "屏幕", "参数", "评测", "平板",
                      "系统", "处理器", "像素", "显卡", "键盘")),
    ("汽车", "汽车", ("新能源", "油耗", "驾照", "提车", "电动车", "发动机", "变速箱", "车主", "试驾", "轮胎",
                    "越野", "底盘", "百公里", "充电桩", "车型")),
    ("时尚美妆", "美妆", ("口红", "粉底", "眼影", "护肤", "面膜", "穿搭", "色号", "卸妆", "香水", "发型",
                      "美甲", "防晒", "化妆", "显白", "腮红")),
    ("亲子", "育儿", ("宝宝", "孩子", "育儿", "奶粉", "幼儿园", "辅食", "宝妈", "带娃", "早教", "哄睡",
                    "写作业", "童装", "萌娃", "二胎", "尿不湿")),
    ("搞笑", "搞笑", ("段子", "沙雕", "整蛊", "神回复", "憋笑", "笑点", "相声", "小品", "搞怪", "恶搞",
                    "反转", "名场面", "脱口秀", "鬼畜", "玩梗")),
    ("健身", "健身", ("减脂", "增肌", "跑步", "瑜伽", "腹肌", "深蹲", "体脂", "马甲线", "撸铁", "拉伸",
                    "卡路里", "蛋白粉", "健身房", "俯卧撑", "有氧")),
    ("影视", "影视", ("电影", "电视剧", "剧情", "导演", "追剧", "结局", "主角", "预告", "票房", "续集",
                    "彩蛋", "剧透", "配音", "台词", "反派")),
)
WORDS_PER_TOPIC = 15
# Topic-free words: comments use the first list, captions the second.
COMMENT_FILLER = ("真的", "太", "了", "这个", "我也", "感觉", "哈哈哈", "笑死", "绝了", "为什么", "有没有人",
                  "一样", "第一次", "终于", "今天", "大家", "支持", "说实话", "确实", "好家伙", "谁懂", "救命",
                  "不愧是", "就是", "还是", "怎么", "好想", "求问", "啊", "吧", "呢", "可以")
CAPTION_FILLER = ("分享", "记录", "日常", "今天", "一起", "来了", "快看", "合集", "原来", "挑战", "终于",
                  "第一期", "必看", "你们", "这样")
EMOJI = ("[捂脸]", "[笑哭]", "[赞]", "[爱心]", "[偷笑]", "[呲牙]", "[玫瑰]", "[抱抱]", "[流泪]", "[惊讶]",
         "[鼓掌]", "[吃瓜]", "[666]", "[比心]", "[调皮]", "[白眼]", "[奸笑]", "[哭笑]")
PUNCT = ("，", "！", "？", "。", "～", "、", "…")

ACTIVE_DEGREES = ("full_active", "high_active", "middle_active", "low_active", "single_low_active",
                  "2_14_day_new", "30day_retention", "day_new", "UNKNOWN")
_ACTIVE_PROBS = np.array([0.42, 0.20, 0.14, 0.06, 0.03, 0.06, 0.03, 0.02, 0.04])
_ACTIVE_MULT = np.array([1.6, 1.2, 0.8, 0.5, 0.3, 0.6, 0.5, 0.3, 0.7])  # relative impression volume
GENDERS = ("M", "F", "UNKNOWN")
_GENDER_PROBS = np.array([0.48, 0.49, 0.03])
AGE_RANGES = ("0-12", "12-17", "18-23", "24-30", "31-40", "41-49", "50+", "UNKNOWN")
_AGE_PROBS = np.array([0.01, 0.05, 0.17, 0.25, 0.27, 0.14, 0.09, 0.02])
FOLLOW_RANGES = ("0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+")
_FOLLOW_EDGES = np.array([0, 10, 50, 100, 150, 250, 500])  # upper-inclusive edges (searchsorted left)
FANS_RANGES = ("0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)", "[5k,1w)", "[1w,10w)", "[10w,100w)",
               "[100w,1000w)")
_FANS_EDGES = np.array([1, 10, 100, 1_000, 5_000, 10_000, 100_000, 1_000_000])  # lower-inclusive edges
FRIEND_RANGES = ("0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+")
_FRIEND_EDGES = np.array([1, 5, 30, 60, 120, 250])  # lower-inclusive edges
# Relative traffic per local hour (Asia/Shanghai): night trough, lunch bump, evening peak.
_DIURNAL = np.array([3.0, 1.8, 1.0, 0.6, 0.5, 0.6, 1.2, 2.2, 3.0, 3.2, 3.4, 3.8,
                     4.6, 4.4, 3.6, 3.4, 3.5, 3.8, 4.4, 5.2, 5.8, 6.0, 5.4, 4.2])


@dataclass(frozen=True)
class KuaiComtReplicaConfig:
    """Knobs of the KuaiComt replica. Every field changes the written bytes (hash them for a cache key)."""

    n_users: int = 1500
    n_videos: int = 1200
    seed: int = 0
    n_topics: int = 12  # topics in use (<= len(TOPICS) = 14); each has its own words and category
    # --- volumes
    impressions_per_user: float = 60.0  # mean impressions per user; lognormal counts (heavy tail)
    impressions_sigma: float = 0.8  # lognormal sigma of the per-user impression count
    min_comments_per_video: int = 55  # the real release drops videos with fewer comments
    extra_comments_per_video: float = 15.0  # mean comments above the minimum (negative binomial)
    n_authors: int = 400  # distinct author_id; each author mostly posts on one topic
    session_length: float = 8.0  # mean impressions per session (geometric)
    # --- users and the recommender
    interest_sharpness: float = 1.5  # recommender draws topics by softmax(sharpness * affinity)
    demographic_tilt: float = 0.4  # sd of the age and gender shifts of the topic affinities
    rec_precision: float = 0.7  # share of impressions whose topic follows the user's interests
    topic_zipf: float = 0.6  # Zipf exponent of the global topic popularity
    video_zipf: float = 1.0  # Zipf exponent of the video popularity inside a topic
    # --- videos
    ad_rate: float = 0.03  # share of AD videos (video_type)
    duration_median_s: float = 25.0  # median video duration; lognormal, clipped to 3..600 s
    duration_sigma: float = 0.8  # lognormal sigma of the duration
    upload_age_days: float = 20.0  # mean days between upload and the video's first impression
    # --- video-level feedback (overall rates; logit offsets are calibrated to hit them)
    click_rate: float = 0.88
    like_rate: float = 0.05
    follow_rate: float = 0.005
    forward_rate: float = 0.01
    collect_rate: float = 0.008
    hate_rate: float = 0.002
    profile_visit_rate: float = 0.03  # share of impressions with profile_stay_time > 0
    comment_write_rate: float = 0.04  # P(top-level comment written | section opened) -> is_comment
    # --- comment section: opening and staytime (the planted signal)
    comment_open_rate: float = 0.134  # share of impressions that open the comment section (real: 13.4%)
    open_relevance_weight: float = 0.8  # logit weight of the top comments' relevance on opening
    open_video_weight: float = 0.3  # logit weight of the video topic's relevance on opening
    propensity_sigma: float = 0.7  # sd of the per-user comment propensity (open logit, stay, interactions)
    stay_median_s: float = 6.0  # median comment staytime of opened sections
    stay_sigma: float = 1.1  # sd of the lognormal noise of the staytime
    stay_relevance_weight: float = 0.5  # log-staytime per unit of top-comment relevance
    stay_video_weight: float = 0.15  # log-staytime per unit of video-topic relevance
    stay_likes_weight: float = -0.08  # log-staytime per sd of log mean top-comment likes (real: falls)
    stay_propensity_weight: float = 0.5  # log-staytime per unit of the user's comment propensity
    stay_duration_weight: float = 0.1  # log-staytime per sd of log video duration (real: rises mildly)
    max_stay_s: float = 1800.0  # staytime cap
    # --- comments
    off_topic_rate: float = 0.3  # mean share of a video's comments not on the video's topic
    off_topic_concentration: float = 4.0  # Beta concentration of the per-video off-topic share
    drift_share: float = 0.6  # share of off-topic comments on the video's drift topic (else random)
    comment_like_median: float = 30.0  # median comment_like_cnt (lognormal)
    comment_like_sigma: float = 1.8  # lognormal sigma of comment_like_cnt (heavy tail)
    shown_comments: int = 6  # comments visible on opening (most-liked); LCU shows 6 per impression
    scroll_s_per_comment: float = 4.0  # one more comment becomes visible per this many seconds of stay
    max_seen_comments: int = 40  # cap on the comments seen in one section visit
    # --- comment interactions
    interactions_per_open: float = 0.4  # mean likes/replies per opened section (real ~0.06, raised)
    interaction_relevance_weight: float = 0.8  # logit weight of the user's affinity to the comment topic
    interaction_rank_decay: float = 0.08  # logit decrease per like rank (top comments get more attention)
    reply_share: float = 0.2  # share of interactions that are replies (a reply may also like)

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"KuaiComtReplicaConfig: {what}")

        need(self.n_users >= 1 and self.n_videos >= 1, "need n_users >= 1 and n_videos >= 1")
        need(2 <= self.n_topics <= len(TOPICS), f"n_topics must be in 2..{len(TOPICS)}")
        need(self.n_videos >= self.n_topics, "need n_videos >= n_topics")
        need(self.n_authors >= self.n_topics, "need n_authors >= n_topics")
        need(self.impressions_per_user >= 1.0, "impressions_per_user must be >= 1")
        need(self.min_comments_per_video >= self.shown_comments >= 1, "need min_comments_per_video >= shown_comments >= 1")
        need(self.max_seen_comments >= self.shown_comments, "need max_seen_comments >= shown_comments")
        need(self.session_length >= 1.0, "session_length must be >= 1")
        for name in ("rec_precision", "ad_rate", "off_topic_rate", "drift_share", "reply_share"):
            need(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        need(0.0 < self.off_topic_rate < 1.0, "off_topic_rate must be in (0, 1)")
        need(0.0 < self.click_rate < 1.0, "click_rate must be in (0, 1)")
        for name in ("like_rate", "follow_rate", "forward_rate", "collect_rate", "profile_visit_rate",
                     "comment_open_rate"):
            need(0.0 < getattr(self, name) < self.click_rate, f"{name} must be in (0, click_rate)")
        need(0.0 < self.hate_rate < 1.0, "hate_rate must be in (0, 1)")
        need(0.0 <= self.comment_write_rate < 1.0, "comment_write_rate must be in [0, 1)")
        need(self.interactions_per_open > 0.0, "interactions_per_open must be > 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class KuaiComtReplica:
    """In-memory replica: the five files' tables plus the hidden values."""

    user_video_inter: pl.DataFrame  # rows exactly as written to user_video_inter.csv
    user_comment_inter: pl.DataFrame  # rows exactly as written to user_comment_inter.csv
    user_features: pl.DataFrame
    video_features: pl.DataFrame
    comment_features: pl.DataFrame
    topic_names: tuple[str, ...]  # category string of each topic index
    user_topics: pl.DataFrame  # user_id, topic, affinity, on_interest (affinity > 0); one row per pair
    videos: pl.DataFrame  # video_id, topic, drift_topic, off_topic_share
    comments: pl.DataFrame  # comment_id, video_id, topic, like_rank (0 = most liked in its video)
    # Same row order as user_video_inter: user_id, video_id, video_topic, video_relevance, top_relevance
    # (mean affinity to the topics of the video's `shown_comments` most-liked comments), top_like_mean,
    # open_start_ms (Unix ms when the comment section was opened; null if not opened), n_seen.
    impressions: pl.DataFrame
    # One row per (opened impression, seen comment): user_id, video_id, comment_id, like_rank, topic,
    # affinity, interacted.
    comment_views: pl.DataFrame


# ----------------------------------------------------------------------------------------- helpers
def _calibrate_offset(x: np.ndarray, target: float, mask: np.ndarray | None = None) -> float:
    """Logit offset b with mean(mask * sigmoid(b + x)) == target (bisection; mask defaults to all ones).

    Calibrating the offset keeps the rate knobs meaningful whatever the weights of the other terms."""
    w = np.ones(len(x)) if mask is None else mask.astype(np.float64)
    if len(x) == 0 or w.mean() <= target:
        return 40.0
    lo, hi = -40.0, 40.0
    for _ in range(32):  # 80 / 2**32: far below any rate's sensitivity
        mid = 0.5 * (lo + hi)
        if np.mean(w * sigmoid(mid + x)) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _sample_rows(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise draw: for each row of a (N, K) cumulative weight matrix, the index its uniform selects."""
    return np.minimum((u[:, None] * cdf[:, -1:] >= cdf).sum(axis=1), cdf.shape[1] - 1)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


# ----------------------------------------------------------------------------------------- phases
@dataclass(frozen=True)
class _Streams:
    """One random generator per phase."""

    user: np.random.Generator
    video: np.random.Generator
    comment: np.random.Generator
    imp: np.random.Generator
    feedback: np.random.Generator
    stay: np.random.Generator
    inter: np.random.Generator
    time: np.random.Generator
    text: np.random.Generator
    id: np.random.Generator


@dataclass(frozen=True)
class _Users:
    """Users' hidden interests and propensities, and their public profile."""

    affinity: np.ndarray  # (n_u, T) hidden affinity per topic; > 0 = on-interest
    rec_cdf: np.ndarray  # (n_u, T) cumulative recommender topic weights softmax(sharpness * affinity)
    propensity: np.ndarray  # (n_u,) comment propensity (open logit, staytime, interactions)
    feedback_offset: np.ndarray  # (n_u, 5) per-user logit offsets of click, like, follow, forward, collect
    n_imps: np.ndarray  # (n_u,) wanted impression count
    active: np.ndarray  # index into ACTIVE_DEGREES
    gender: np.ndarray  # index into GENDERS
    age: np.ndarray  # index into AGE_RANGES
    profile: dict[str, np.ndarray]  # int columns of user_features (counts, register_days, onehots)


@dataclass(frozen=True)
class _Videos:
    """The catalogue: one entry per video."""

    topic: np.ndarray
    drift: np.ndarray  # topic of most off-topic comments
    off_share: np.ndarray  # share of comments not on the video topic
    pop: np.ndarray  # popularity weight inside the topic
    pop_z: np.ndarray  # standardised log popularity
    quality: np.ndarray  # latent quality (click/like/watch)
    author: np.ndarray  # author index
    is_ad: np.ndarray  # bool
    duration_ms: np.ndarray  # int ms
    upload_age: np.ndarray  # days between upload and the video's first impression


@dataclass(frozen=True)
class _Comments:
    """Comments, grouped by video (videos in index order), most-liked first inside a video."""

    video: np.ndarray
    topic: np.ndarray
    like_cnt: np.ndarray  # distinct inside a video, strictly decreasing with like_rank
    like_rank: np.ndarray  # 0 = most liked in its video
    reply_out: np.ndarray
    shows: np.ndarray
    start: np.ndarray  # (n_v,) offset of each video's first (most-liked) comment
    count: np.ndarray  # (n_v,) comments per video
    top_like_z: np.ndarray  # (n_v,) standardised log mean likes of the shown (most-liked) comments


@dataclass(frozen=True)
class _Impressions:
    """One entry per impression, grouped by user; (user, video) pairs are unique."""

    user: np.ndarray
    video: np.ndarray
    video_relevance: np.ndarray  # affinity of the user to the video's topic
    top_relevance: np.ndarray  # mean affinity to the topics of the shown (most-liked) comments


@dataclass(frozen=True)
class _Feedback:
    """Video-level feedback per impression."""

    flags: dict[str, np.ndarray]  # FEEDBACK_COLUMNS except is_comment (set after the interactions)
    play_ms: np.ndarray  # int ms, 0 when not clicked
    long_view: np.ndarray  # bool
    profile_ms: np.ndarray  # int ms


@dataclass(frozen=True)
class _Sections:
    """Comment-section visits per impression."""

    opened: np.ndarray  # bool
    stay_ms: np.ndarray  # int ms, 0 when not opened
    open_offset_ms: np.ndarray  # ms after the impression start at which the section opened
    wrote: np.ndarray  # bool: wrote a top-level comment


@dataclass(frozen=True)
class _Views:
    """One entry per (opened impression, seen comment)."""

    imp: np.ndarray
    comment: np.ndarray
    rank: np.ndarray  # like rank of the comment in its video
    affinity: np.ndarray  # user's affinity to the comment topic
    interacted: np.ndarray  # bool
    is_like: np.ndarray  # bool (only meaningful where interacted)
    is_reply: np.ndarray
    offset_ms: np.ndarray  # interaction time after the impression start (inside the comment stay)


@dataclass(frozen=True)
class _RawIds:
    """Raw ids written to the files, indexed by internal index."""

    user: np.ndarray
    author: np.ndarray
    video: np.ndarray
    comment: np.ndarray


def simulate_kuaicomt_replica(config: KuaiComtReplicaConfig) -> KuaiComtReplica:
    """Generate the replica tables in memory (deterministic for a given config)."""
    config.validate()
    rng = _spawn_streams(config.seed)
    # Each phase draws only from its own stream, so a phase's draws do not depend on how many draws
    # the other phases make.
    users = _build_users(rng.user, config)
    videos = _build_videos(rng.video, config)
    comments = _build_comments(rng.comment, config, videos)
    imps = _draw_impressions(rng.imp, config, users, videos, comments)
    feedback = _draw_video_feedback(rng.feedback, config, users, videos, imps)
    sections = _draw_comment_sections(rng.stay, config, users, videos, comments, imps, feedback)
    views = _draw_comment_interactions(rng.inter, config, users, comments, imps, sections)
    time_ms = _draw_times(rng.time, config, imps, feedback, sections)
    ids = _draw_raw_ids(rng.id, config, len(comments.video))
    order = np.lexsort((ids.video[imps.video], time_ms, ids.user[imps.user]))  # file order: user, time
    captions = _captions(rng.text, videos)  # captions, then comments: both draw from rng.text
    comment_texts = _comment_texts(rng.text, comments)
    return KuaiComtReplica(
        user_video_inter=_user_video_table(order, imps, videos, feedback, sections, views, time_ms, ids),
        user_comment_inter=_user_comment_table(imps, views, time_ms, ids),
        user_features=_user_feature_table(users, ids),
        video_features=_video_feature_table(videos, imps, time_ms, captions, ids),
        comment_features=_comment_feature_table(comments, comment_texts, ids),
        topic_names=tuple(t[0] for t in TOPICS[:config.n_topics]),
        user_topics=_user_topic_table(users, ids),
        videos=pl.DataFrame({"video_id": ids.video, "topic": videos.topic, "drift_topic": videos.drift,
                             "off_topic_share": videos.off_share}).sort("video_id"),
        comments=pl.DataFrame({"comment_id": ids.comment, "video_id": ids.video[comments.video],
                               "topic": comments.topic, "like_rank": comments.like_rank}).sort("comment_id"),
        impressions=_impression_table(config, order, imps, videos, comments, sections, views, time_ms, ids),
        comment_views=_comment_view_table(imps, comments, views, ids),
    )


def _spawn_streams(seed: int) -> _Streams:
    """Build the per-phase random generators from the seed."""
    streams = np.random.SeedSequence([seed, 0xC033E7]).spawn(len(dataclasses.fields(_Streams)))
    return _Streams(*(np.random.default_rng(s) for s in streams))


def _build_users(rng: np.random.Generator, config: KuaiComtReplicaConfig) -> _Users:
    """Draw the users' profile, hidden topic affinities, comment propensity and impression counts."""
    n_u, n_t = config.n_users, config.n_topics
    active = rng.choice(len(ACTIVE_DEGREES), size=n_u, p=_ACTIVE_PROBS)
    gender = rng.choice(len(GENDERS), size=n_u, p=_GENDER_PROBS)
    age = rng.choice(len(AGE_RANGES), size=n_u, p=_AGE_PROBS)
    # Affinity = personal taste + small shared age/gender shifts, so the profile predicts interests a bit.
    age_tilt = rng.normal(0.0, config.demographic_tilt, (len(AGE_RANGES), n_t))
    gender_tilt = rng.normal(0.0, config.demographic_tilt, (len(GENDERS), n_t))
    affinity = rng.normal(0.0, 1.0, (n_u, n_t)) + age_tilt[age] + gender_tilt[gender]
    logits = config.interest_sharpness * affinity
    rec_w = np.exp(logits - logits.max(axis=1, keepdims=True))
    propensity = rng.normal(0.0, config.propensity_sigma, n_u)
    feedback_offset = rng.normal(0.0, 1.0, (n_u, 5)) * np.array([0.5, 0.8, 0.6, 0.8, 0.6])
    # Heavy-tailed impression counts (mean impressions_per_user), scaled by the activity degree and
    # capped so a user can still find that many distinct videos.
    mult = _ACTIVE_MULT[active] / (_ACTIVE_MULT @ _ACTIVE_PROBS)
    sigma = config.impressions_sigma
    raw = rng.lognormal(np.log(config.impressions_per_user) - 0.5 * sigma**2, sigma, n_u) * mult
    n_imps = np.clip(np.rint(raw), 1, max(1, config.n_videos // 3)).astype(np.int64)
    return _Users(affinity=affinity, rec_cdf=np.cumsum(rec_w, axis=1), propensity=propensity,
                  feedback_offset=feedback_offset, n_imps=n_imps, active=active, gender=gender, age=age,
                  profile=_draw_profile(rng, config, active))


def _draw_profile(rng: np.random.Generator, config: KuaiComtReplicaConfig, active: np.ndarray) -> dict[str, np.ndarray]:
    """Draw the integer profile columns of user_features (counts, register days, one-hot codes)."""
    n_u = config.n_users
    is_live_author = (rng.random(n_u) < 0.04).astype(np.int64)
    produce = np.where(rng.random(n_u) < 0.55, 0, np.rint(rng.lognormal(2.0, 1.5, n_u))).astype(np.int64)
    follow = np.where(rng.random(n_u) < 0.05, 0, np.rint(rng.lognormal(np.log(60), 1.3, n_u))).astype(np.int64)
    fans = np.where(rng.random(n_u) < 0.30, 0, np.rint(rng.lognormal(np.log(5), 2.3, n_u))).astype(np.int64)
    friends = np.where(rng.random(n_u) < 0.25, 0, np.rint(rng.lognormal(np.log(10), 1.3, n_u))).astype(np.int64)
    # New-user degrees get matching register days; the others are long-registered users.
    register = np.clip(np.rint(rng.lognormal(np.log(700), 0.8, n_u)), 31, 4000).astype(np.int64)
    name = np.array(ACTIVE_DEGREES)[active]
    register = np.where(name == "day_new", 1, register)
    register = np.where(name == "2_14_day_new", rng.integers(2, 15, n_u), register)
    register = np.where(name == "30day_retention", rng.integers(15, 31, n_u), register)
    profile = {"is_live_author": is_live_author, "produce_video_num": produce, "follow_count": follow,
               "fans_count": np.minimum(fans, 9_999_999), "friend_count": friends, "register_days": register}
    for k, card in enumerate(ONEHOT_CARDINALITIES):
        # Encrypted codes with a skewed distribution (Zipf over a random relabelling of the codes).
        profile[f"onehot_feat{k}"] = rng.permutation(card)[sample_weighted(zipf(card, 1.0), rng.random(n_u))]
    return profile


def _build_videos(rng: np.random.Generator, config: KuaiComtReplicaConfig) -> _Videos:
    """Draw the catalogue: topics (Zipf), popularity inside the topic, authors, type, duration."""
    n_v, n_t, n_a = config.n_videos, config.n_topics, config.n_authors
    topic_pop = shuffled_zipf(rng, n_t, config.topic_zipf)
    # The leading arange guarantees every topic owns a video (and an author) for the samplers.
    topic = np.r_[np.arange(n_t), sample_weighted(topic_pop, rng.random(n_v - n_t))][rng.permutation(n_v)]
    drift = (topic + rng.integers(1, n_t, n_v)) % n_t  # any topic but the video's own
    c = config.off_topic_concentration
    off_share = rng.beta(c * config.off_topic_rate, c * (1.0 - config.off_topic_rate), n_v)
    rank = np.empty(n_v, dtype=np.int64)  # random popularity rank inside the topic
    order = np.lexsort((rng.random(n_v), topic))
    counts = np.bincount(topic, minlength=n_t)
    rank[order] = rank_in_segment(counts)
    pop = zipf(int(counts.max()), config.video_zipf)[rank]
    author_topic = np.r_[np.arange(n_t), rng.integers(0, n_t, n_a - n_t)]
    # 85% of a video's authors are specialists of its topic, the rest post anything.
    author = np.where(rng.random(n_v) < 0.85,
                      sample_within(rng, rng.exponential(1.0, n_a), author_topic, n_t, topic),
                      rng.integers(0, n_a, n_v))
    duration_s = np.clip(rng.lognormal(np.log(config.duration_median_s), config.duration_sigma, n_v), 3.0, 600.0)
    upload_age = rng.geometric(1.0 / (1.0 + config.upload_age_days), n_v) - 1  # mean upload_age_days
    return _Videos(topic=topic, drift=drift, off_share=off_share, pop=pop, pop_z=_zscore(np.log(pop)),
                   quality=0.3 * _zscore(np.log(pop)) + rng.normal(0.0, 0.5, n_v), author=author,
                   is_ad=rng.random(n_v) < config.ad_rate, duration_ms=np.rint(duration_s * 1000).astype(np.int64),
                   upload_age=upload_age)


def _build_comments(rng: np.random.Generator, config: KuaiComtReplicaConfig, videos: _Videos) -> _Comments:
    """Draw each video's comments: topics (on-topic, drift or random), like/reply/show counts."""
    n_v, n_t = len(videos.topic), config.n_topics
    extra = config.extra_comments_per_video
    # Negative binomial with shape 2: mean `extra`, a tail of videos with many more comments.
    count = config.min_comments_per_video + (rng.negative_binomial(2, 2.0 / (2.0 + extra), n_v) if extra > 0 else 0)
    count = np.asarray(count, dtype=np.int64)
    video = np.repeat(np.arange(n_v), count)
    n_c = len(video)
    off = rng.random(n_c) < videos.off_share[video]
    to_drift = rng.random(n_c) < config.drift_share
    topic = np.where(~off, videos.topic[video],
                     np.where(to_drift, videos.drift[video], rng.integers(0, n_t, n_c)))
    # Likes: lognormal, more on popular videos; the topic does not change them, so which topics end up
    # among the most-liked comments is random per video.
    mu = np.log(config.comment_like_median) + 0.5 * videos.pop_z[video]
    likes = np.maximum(2, np.floor(rng.lognormal(mu, config.comment_like_sigma))).astype(np.int64)
    # Sort each video's comments by likes (descending), then make the counts strictly decreasing:
    # L'_r = max_{j >= r}(L_j + j) - r, a suffix max done per video with per-video offsets, so the
    # "most-liked comments" of a video never depend on a tie-break.
    order = np.lexsort((-likes, video))
    topic, likes = topic[order], likes[order]
    rank = rank_in_segment(count)
    big = int(likes.max() + count.max() + 1)
    v = (likes + rank) + (n_v - 1 - video) * big  # later videos get smaller offsets
    suffix_max = np.maximum.accumulate(v[::-1])[::-1]
    likes = suffix_max - (n_v - 1 - video) * big - rank
    reply_out = rng.poisson(0.08 * likes.astype(np.float64) ** 0.8)
    shows = np.rint(likes * rng.lognormal(np.log(40.0), 0.6, n_c)).astype(np.int64) + rng.poisson(20.0, n_c)
    start = segment_starts(count)
    k = config.shown_comments
    top_idx = start[:, None] + np.arange(k)[None, :]
    return _Comments(video=video, topic=topic, like_cnt=likes, like_rank=rank, reply_out=reply_out, shows=shows,
                     start=start, count=count, top_like_z=_zscore(np.log(likes[top_idx].mean(axis=1))))


def _draw_impressions(rng: np.random.Generator, config: KuaiComtReplicaConfig, users: _Users, videos: _Videos,
                      comments: _Comments) -> _Impressions:
    """Draw each user's impressions: a topic (interest or popularity), then a video of that topic."""
    n_t, n_v = config.n_topics, config.n_videos
    user = np.repeat(np.arange(config.n_users), users.n_imps)
    n_e = len(user)
    topic_pop = np.bincount(videos.topic, weights=videos.pop, minlength=n_t)
    by_interest = rng.random(n_e) < config.rec_precision
    topic = np.where(by_interest, _sample_rows(users.rec_cdf[user], rng.random(n_e)),
                     sample_weighted(topic_pop, rng.random(n_e)))
    video = sample_within(rng, videos.pop, videos.topic, n_t, topic)
    for _ in range(10):  # redraw videos the user already saw (same topic)
        dup = ~first_occurrence(user * n_v + video)
        if not dup.any():
            break
        video[dup] = sample_within(rng, videos.pop, videos.topic, n_t, topic[dup])
    keep = first_occurrence(user * n_v + video)  # leftover duplicates are dropped: pairs are unique
    user, video = user[keep], video[keep]
    # What the user would see on opening: the video's most-liked comments, and how much they interest them.
    top = comments.start[video][:, None] + np.arange(config.shown_comments)[None, :]
    top_relevance = users.affinity[user[:, None], comments.topic[top]].mean(axis=1)
    return _Impressions(user=user, video=video, video_relevance=users.affinity[user, videos.topic[video]],
                        top_relevance=top_relevance)


def _draw_video_feedback(rng: np.random.Generator, config: KuaiComtReplicaConfig, users: _Users,
                         videos: _Videos, imps: _Impressions) -> _Feedback:
    """Draw click / like / follow / forward / collect / hate, play time and profile visits."""
    n_e = len(imps.user)
    rel, q, v = imps.video_relevance, videos.quality[imps.video], imps.video
    off = users.feedback_offset[imps.user]
    ad = videos.is_ad[v].astype(np.float64)

    def draw(x: np.ndarray, rate: float, mask: np.ndarray | None = None) -> np.ndarray:
        p = sigmoid(_calibrate_offset(x, rate, mask) + x)
        hit = rng.random(n_e) < p
        return hit if mask is None else hit & mask

    click = draw(0.5 * rel + 0.5 * q - 1.0 * ad + off[:, 0], config.click_rate)
    hate = draw(-0.8 * rel - 0.4 * q + 1.5 * ad, config.hate_rate)
    liked = click & ~hate
    like = draw(0.6 * rel + 0.6 * q + off[:, 1], config.like_rate, liked)
    follow = draw(0.5 * rel + 0.4 * q + off[:, 2], config.follow_rate, liked)
    forward = draw(0.3 * rel + 0.3 * q + off[:, 3], config.forward_rate, liked)
    collect = draw(0.5 * rel + 0.4 * q + off[:, 4], config.collect_rate, liked)
    # Profile visits: almost always around a follow, otherwise rarer; the calibrated rate counts both.
    visit = draw(0.3 * rel + 3.0 * follow, config.profile_visit_rate, click)
    profile_ms = np.where(visit, np.rint(rng.lognormal(np.log(6000.0), 1.0, n_e)), 0).astype(np.int64)
    # Watch ratio: interest and quality make users watch longer; long videos are watched to a smaller
    # share. Ratios > 1 are replays. Unclicked impressions have no play time.
    dur = videos.duration_ms[v]
    log_ratio = (np.log(0.55) + 0.3 * rel + 0.3 * q - 0.25 * _zscore(np.log(videos.duration_ms))[v]
                 + rng.normal(0.0, 0.8, n_e))
    play = np.maximum(500, np.rint(dur * np.clip(np.exp(log_ratio), 0.02, 4.0))).astype(np.int64)
    play = np.where(click, play, 0)
    long_view = np.where(dur <= LONG_VIEW_MS, play >= dur, play >= LONG_VIEW_MS)
    flags = {"is_click": click, "is_like": like, "is_follow": follow, "is_forward": forward,
             "is_collect": collect, "is_hate": hate}
    return _Feedback(flags=flags, play_ms=play, long_view=long_view, profile_ms=profile_ms)


def _draw_comment_sections(rng: np.random.Generator, config: KuaiComtReplicaConfig, users: _Users,
                           videos: _Videos, comments: _Comments, imps: _Impressions,
                           feedback: _Feedback) -> _Sections:
    """Draw which impressions open the comment section and how long the user stays (the LCU label)."""
    n_e = len(imps.user)
    click = feedback.flags["is_click"]
    prop = users.propensity[imps.user]
    # Opening: the relevance of the visible (most-liked) comments matters beyond the video's topic.
    x = config.open_relevance_weight * imps.top_relevance + config.open_video_weight * imps.video_relevance + prop
    opened = click & (rng.random(n_e) < sigmoid(_calibrate_offset(x, config.comment_open_rate, click) + x))
    # Staytime: every term is centred on the opened impressions so the median stays near stay_median_s.
    like_z = comments.top_like_z[imps.video]
    dur_z = _zscore(np.log(videos.duration_ms))[imps.video]
    terms = (config.stay_relevance_weight * imps.top_relevance
             + config.stay_video_weight * imps.video_relevance
             + config.stay_likes_weight * like_z
             + config.stay_propensity_weight * prop
             + config.stay_duration_weight * dur_z)
    centre = terms[opened].mean() if opened.any() else 0.0
    log_stay = np.log(config.stay_median_s * 1000.0) + terms - centre + rng.normal(0.0, config.stay_sigma, n_e)
    stay = np.clip(np.rint(np.exp(log_stay)), 300, config.max_stay_s * 1000.0).astype(np.int64)
    stay = np.where(opened, stay, 0)
    # The section opens while the video plays (between 10% and 90% of the play time).
    open_offset = np.where(opened, np.rint(feedback.play_ms * rng.uniform(0.1, 0.9, n_e)), 0).astype(np.int64)
    wrote = opened & (rng.random(n_e) < config.comment_write_rate)
    return _Sections(opened=opened, stay_ms=stay, open_offset_ms=open_offset, wrote=wrote)


def _draw_comment_interactions(rng: np.random.Generator, config: KuaiComtReplicaConfig, users: _Users,
                               comments: _Comments, imps: _Impressions, sections: _Sections) -> _Views:
    """Draw likes/replies on the comments seen in each opened section (on-interest comments win)."""
    open_idx = np.flatnonzero(sections.opened)
    v = imps.video[open_idx]
    # The user sees the most-liked comments, then one more per scroll_s_per_comment seconds of stay.
    scrolled = sections.stay_ms[open_idx] // int(config.scroll_s_per_comment * 1000)
    n_seen = np.minimum(np.minimum(config.shown_comments + scrolled, config.max_seen_comments), comments.count[v])
    imp = np.repeat(open_idx, n_seen)
    rank = rank_in_segment(n_seen)
    comment = comments.start[imps.video[imp]] + rank
    affinity = users.affinity[imps.user[imp], comments.topic[comment]]
    x = (config.interaction_relevance_weight * affinity + users.propensity[imps.user[imp]]
         - config.interaction_rank_decay * rank)
    # Calibrate so the mean number of interactions per opened section is interactions_per_open.
    per_view = config.interactions_per_open * len(open_idx) / max(len(imp), 1)
    interacted = rng.random(len(imp)) < sigmoid(_calibrate_offset(x, min(per_view, 0.95)) + x)
    is_reply = rng.random(len(imp)) < config.reply_share
    is_like = ~is_reply | (rng.random(len(imp)) < 0.4)  # every interaction is a like, a reply or both
    # The interaction happens inside the comment stay: open time + (5%..95%) of the stay.
    offset = sections.open_offset_ms[imp] + np.rint(sections.stay_ms[imp] * rng.uniform(0.05, 0.95, len(imp)))
    return _Views(imp=imp, comment=comment, rank=rank, affinity=affinity, interacted=interacted,
                  is_like=is_like, is_reply=is_reply, offset_ms=offset.astype(np.int64))


def _draw_times(rng: np.random.Generator, config: KuaiComtReplicaConfig, imps: _Impressions,
                feedback: _Feedback, sections: _Sections) -> np.ndarray:
    """Draw the impression start times (Unix ms): sessions at diurnal hours, impressions back to back."""
    n_e = len(imps.user)
    first = np.r_[True, imps.user[1:] != imps.user[:-1]]
    new_session = first | (rng.random(n_e) < 1.0 / config.session_length)
    session = np.cumsum(new_session) - 1
    # Time spent on an impression: the play (or a short skip) and the comment stay, then a short gap.
    busy = np.where(feedback.flags["is_click"], np.maximum(feedback.play_ms, sections.open_offset_ms + sections.stay_ms),
                    rng.integers(300, 2000, n_e))
    step = busy + np.rint(rng.exponential(2500.0, n_e)).astype(np.int64) + 200
    before = np.cumsum(step) - step
    offset = before - before[np.flatnonzero(new_session)][session]
    span = np.bincount(session, weights=step).astype(np.int64)
    n_s = len(span)
    hour = sample_weighted(_DIURNAL, rng.random(n_s))
    start = rng.integers(0, N_DAYS, n_s) * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n_s)
    start = np.maximum(0, np.minimum(start, N_DAYS * DAY_MS - 1 - span))  # the session ends in the window
    return WINDOW_START_MS + start[session] + offset


def _draw_raw_ids(rng: np.random.Generator, config: KuaiComtReplicaConfig, n_comments: int) -> _RawIds:
    """Draw distinct raw ids of real magnitude (authors share the user id space, disjoint from users)."""
    people = distinct_ids(rng, config.n_users + config.n_authors, 100_000_000, 3_000_000_000)
    return _RawIds(user=people[:config.n_users], author=people[config.n_users:],
                   video=distinct_ids(rng, config.n_videos, 10_000_000_000, 120_000_000_000),
                   comment=distinct_ids(rng, n_comments, 10_000_000_000, 500_000_000_000))


# ------------------------------------------------------------------------------------------- texts
def _vocabulary() -> tuple[pl.Series, dict[str, int]]:
    """All words in one string Series ("" first) and the offset of each word kind in it."""
    words = [""]
    offsets = {}
    for name, items in (("topic", [w for t in TOPICS for w in t[2]]), ("hashtag", ["#" + t[1] for t in TOPICS]),
                        ("comment_filler", COMMENT_FILLER), ("caption_filler", CAPTION_FILLER),
                        ("emoji", EMOJI), ("punct", PUNCT)):
        offsets[name] = len(words)
        words.extend(items)
    return pl.Series("w", words, dtype=pl.String), offsets


def _compose(rng: np.random.Generator, topic: np.ndarray, n_slots: int, kind_probs: list[tuple[str, float]],
             vocab: pl.Series, offsets: dict[str, int]) -> pl.Series:
    """Texts of `n_slots` random words each; one random slot always holds a word of the row's topic.

    Slot kinds: "topic" (a word of the row's topic), "noise" (a word of any topic), a word list name
    ("comment_filler", ...), or "empty". Strings are assembled column by column with polars."""
    n = len(topic)
    names = [k for k, _ in kind_probs]
    kind = sample_weighted([p for _, p in kind_probs], rng.random((n, n_slots)).ravel()).reshape(n, n_slots)
    kind[np.arange(n), rng.integers(0, n_slots, n)] = names.index("topic")
    n_all_topics = len(TOPICS) * WORDS_PER_TOPIC
    sizes = {"comment_filler": len(COMMENT_FILLER), "caption_filler": len(CAPTION_FILLER),
             "emoji": len(EMOJI), "punct": len(PUNCT)}
    idx = np.zeros((n, n_slots), dtype=np.int64)  # 0 = "" (empty slot)
    u = rng.random((n, n_slots))
    for k, name in enumerate(names):
        hit = kind == k
        if name == "topic":
            word = offsets["topic"] + topic[:, None] * WORDS_PER_TOPIC + (u * WORDS_PER_TOPIC).astype(np.int64)
        elif name == "noise":
            word = offsets["topic"] + (u * n_all_topics).astype(np.int64)
        elif name == "empty":
            continue
        else:
            word = offsets[name] + (u * sizes[name]).astype(np.int64)
        idx[hit] = word[hit]
    cols = [vocab.gather(idx[:, s]).alias(f"s{s}") for s in range(n_slots)]
    return pl.DataFrame(cols).select(pl.concat_str(pl.all(), separator="").alias("text")).to_series()


def _comment_texts(rng: np.random.Generator, comments: _Comments) -> pl.Series:
    """Comment contents: words of the comment's topic, filler, bracket emoji, punctuation."""
    vocab, offsets = _vocabulary()
    kinds = [("topic", 0.32), ("noise", 0.03), ("comment_filler", 0.30), ("emoji", 0.13), ("punct", 0.08),
             ("empty", 0.14)]
    return _compose(rng, comments.topic, 7, kinds, vocab, offsets)


def _captions(rng: np.random.Generator, videos: _Videos) -> pl.Series:
    """Captions: words of the video's topic and caption filler, then '#topic #word' hashtags."""
    vocab, offsets = _vocabulary()
    kinds = [("topic", 0.45), ("caption_filler", 0.30), ("emoji", 0.05), ("punct", 0.06), ("empty", 0.14)]
    body = _compose(rng, videos.topic, 5, kinds, vocab, offsets)
    n = len(videos.topic)
    tag1 = vocab.gather(offsets["hashtag"] + videos.topic)
    word = offsets["topic"] + videos.topic * WORDS_PER_TOPIC + rng.integers(0, WORDS_PER_TOPIC, n)
    tag2 = vocab.gather(np.where(rng.random(n) < 0.7, word, 0))  # most captions carry a second hashtag
    return pl.DataFrame({"b": body, "t1": tag1, "t2": tag2}).select(
        pl.concat_str(pl.col("b"), pl.lit(" "), pl.col("t1"),
                      pl.when(pl.col("t2") == "").then(pl.lit("")).otherwise(pl.lit(" #") + pl.col("t2")))
    ).to_series()


# ------------------------------------------------------------------------------------------ tables
def _user_video_table(order: np.ndarray, imps: _Impressions, videos: _Videos, feedback: _Feedback,
                      sections: _Sections, views: _Views, time_ms: np.ndarray, ids: _RawIds) -> pl.DataFrame:
    """Build user_video_inter (rows sorted by user_id, time_ms)."""
    n_e = len(imps.user)
    replied = np.zeros(n_e, dtype=bool)
    replied[views.imp[views.interacted & views.is_reply]] = True
    flags = dict(feedback.flags, is_comment=replied | sections.wrote)  # a reply is a comment too
    local_hour = ((time_ms - WINDOW_START_MS) // HOUR_MS) % 24  # the window starts at local midnight
    cols = {
        "user_id": ids.user[imps.user], "video_id": ids.video[imps.video],
        "p_hourmin": local_hour * 100, "time_ms": time_ms.astype(np.float64),
        **{name: flags[name].astype(np.int64) for name in FEEDBACK_COLUMNS},
        "long_view": feedback.long_view.astype(np.int64),
        "play_time_ms": feedback.play_ms.astype(np.float64),
        "duration_ms": videos.duration_ms[imps.video].astype(np.float64),
        "profile_stay_time": feedback.profile_ms, "comment_stay_time": sections.stay_ms,
    }
    return pl.DataFrame({k: np.asarray(c)[order] for k, c in cols.items()}).select(USER_VIDEO_COLUMNS)


def _user_comment_table(imps: _Impressions, views: _Views, time_ms: np.ndarray, ids: _RawIds) -> pl.DataFrame:
    """Build user_comment_inter: the interactions, time in Unix seconds, sorted by user and time."""
    hit = np.flatnonzero(views.interacted)
    imp = views.imp[hit]
    return pl.DataFrame({
        "user_id": ids.user[imps.user[imp]], "comment_id": ids.comment[views.comment[hit]],
        "time_stamp": (time_ms[imp] + views.offset_ms[hit]) // 1000, "photo_id": ids.video[imps.video[imp]],
        "is_like": views.is_like[hit].astype(np.int64), "is_reply": views.is_reply[hit].astype(np.int64),
    }).sort("user_id", "time_stamp", "comment_id")


def _user_feature_table(users: _Users, ids: _RawIds) -> pl.DataFrame:
    """Build user_features (sorted by user_id); range columns are bucketed from the counts."""
    p = users.profile
    return pl.DataFrame({
        "user_id": ids.user,
        "user_active_degree": np.array(ACTIVE_DEGREES)[users.active],
        "is_live_author": p["is_live_author"], "produce_video_num": p["produce_video_num"],
        "follow_count": p["follow_count"],
        "follow_user_num_range": np.array(FOLLOW_RANGES)[np.searchsorted(_FOLLOW_EDGES, p["follow_count"], side="left")],
        "fans_count": p["fans_count"],
        "fans_user_num_range": np.array(FANS_RANGES)[np.searchsorted(_FANS_EDGES, p["fans_count"], side="right")],
        "friend_user_num_range": np.array(FRIEND_RANGES)[np.searchsorted(_FRIEND_EDGES, p["friend_count"], side="right")],
        "register_days": p["register_days"],
        "gender": np.array(GENDERS)[users.gender], "age_range": np.array(AGE_RANGES)[users.age],
        **{f"onehot_feat{k}": p[f"onehot_feat{k}"].astype(np.int64) for k in range(len(ONEHOT_CARDINALITIES))},
    }).select(USER_FEATURE_COLUMNS).sort("user_id")


def _video_feature_table(videos: _Videos, imps: _Impressions, time_ms: np.ndarray,
                         captions: pl.Series, ids: _RawIds) -> pl.DataFrame:
    """Build video_features (sorted by video_id); upload_dt lies before the video's first impression."""
    n_v = len(videos.topic)
    day = (time_ms - WINDOW_START_MS) // DAY_MS
    first_day = np.full(n_v, N_DAYS - 1, dtype=np.int64)
    np.minimum.at(first_day, imps.video, day)
    upload = np.datetime_as_string(FIRST_DAY + (first_day - videos.upload_age).astype("timedelta64[D]"), unit="D")
    return pl.DataFrame({
        "video_id": ids.video, "author_id": ids.author[videos.author],
        "video_type": np.where(videos.is_ad, "AD", "NORMAL"), "upload_dt": upload.astype(str),
        "caption": captions, "duration": videos.duration_ms.astype(np.float64),
        "category": np.array([t[0] for t in TOPICS])[videos.topic],
    }).select(VIDEO_FEATURE_COLUMNS).sort("video_id")


def _comment_feature_table(comments: _Comments, texts: pl.Series, ids: _RawIds) -> pl.DataFrame:
    """Build comment_features (sorted by video_id, comment_id)."""
    return pl.DataFrame({
        "comment_id": ids.comment, "comment_content": texts, "video_id": ids.video[comments.video],
        "comment_like_cnt": comments.like_cnt, "comment_reply_out": comments.reply_out,
        "show_comment_cnt_td": comments.shows,
    }).select(COMMENT_FEATURE_COLUMNS).sort("video_id", "comment_id")


def _user_topic_table(users: _Users, ids: _RawIds) -> pl.DataFrame:
    """Hidden: one row per (user, topic) with the affinity and the on-interest flag."""
    n_u, n_t = users.affinity.shape
    aff = users.affinity.ravel()
    return pl.DataFrame({"user_id": np.repeat(ids.user, n_t), "topic": np.tile(np.arange(n_t), n_u),
                         "affinity": aff, "on_interest": aff > 0}).sort("user_id", "topic")


def _impression_table(config: KuaiComtReplicaConfig, order: np.ndarray, imps: _Impressions, videos: _Videos,
                      comments: _Comments, sections: _Sections, views: _Views, time_ms: np.ndarray,
                      ids: _RawIds) -> pl.DataFrame:
    """Hidden: per impression (file order) topics, relevances, open time and number of seen comments."""
    k = config.shown_comments
    first = comments.start[imps.video]
    like_sum = np.r_[0, np.cumsum(comments.like_cnt)]  # the shown comments are the first k of the video
    cols = {
        "user_id": ids.user[imps.user], "video_id": ids.video[imps.video], "video_topic": videos.topic[imps.video],
        "video_relevance": imps.video_relevance, "top_relevance": imps.top_relevance,
        "top_like_mean": (like_sum[first + k] - like_sum[first]) / k,
        "open_start_ms": time_ms + sections.open_offset_ms, "opened": sections.opened,
        "n_seen": np.bincount(views.imp, minlength=len(imps.user)),
    }
    return pl.DataFrame({c: np.asarray(x)[order] for c, x in cols.items()}).with_columns(
        pl.when(pl.col("opened")).then(pl.col("open_start_ms")).otherwise(None).alias("open_start_ms"),
    ).drop("opened")


def _comment_view_table(imps: _Impressions, comments: _Comments, views: _Views, ids: _RawIds) -> pl.DataFrame:
    """Hidden: one row per (opened impression, seen comment)."""
    return pl.DataFrame({
        "user_id": ids.user[imps.user[views.imp]], "video_id": ids.video[imps.video[views.imp]],
        "comment_id": ids.comment[views.comment], "like_rank": views.rank, "topic": comments.topic[views.comment],
        "affinity": views.affinity, "interacted": views.interacted,
    })


# ------------------------------------------------------------------------------------------ writing
def write_kuaicomt_replica(out_dir: Path, config: KuaiComtReplicaConfig) -> list[Path]:
    """Write the five replica files into `out_dir` atomically; return their final paths.

    Output is byte-for-byte deterministic for a given config."""
    replica = simulate_kuaicomt_replica(config)
    tables = {USER_VIDEO_FILE: replica.user_video_inter, USER_COMMENT_FILE: replica.user_comment_inter,
              USER_FEATURES_FILE: replica.user_features, VIDEO_FEATURES_FILE: replica.video_features,
              COMMENT_FEATURES_FILE: replica.comment_features}
    return write_csv_folder(Path(out_dir), tables)
