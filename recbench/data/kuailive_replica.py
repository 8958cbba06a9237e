"""Synthetic replica of KuaiLive (live streaming) plus a short-video domain, in the official file layout.

`write_kuailive_replica(out_dir, config)` writes, comma-separated UTF-8 with a header row (all
timestamps are Unix MILLISECONDS, local days are Asia/Shanghai, the period is 2025-05-05..2025-05-25):

- ``click.csv``: ``user_id,live_id,streamer_id,timestamp,watch_live_time`` (one row per clicked live
  exposure; ``watch_live_time`` in ms, the watch ends before the room does);
- ``comment.csv`` / ``like.csv``: ``user_id,live_id,streamer_id,timestamp``;
- ``gift.csv``: ``user_id,live_id,streamer_id,timestamp,gift_price`` (heavy-tailed integer coins);
- ``negative.csv``: ``user_id,live_id,streamer_id,timestamp`` (exposures that were not clicked);
- ``room.csv``: ``p_date,live_id,streamer_id,live_type,start_timestamp,end_timestamp,
  live_content_category,live_name_id``; a room that crosses local midnight has one row per p_date
  (same live_id, same window, as in the real file); ``live_name_id`` is -1 for rooms without a title;
- ``user.csv`` / ``streamer.csv``: the documented profile columns (range strings, dates, onehot_feat0..6);
- ``title_embeddings.npy``: float32 [n_titles, 128], row k = the k-th smallest live_name_id != -1;
- ``photo_interaction.csv``: the short-video domain in the KuaiLive-M3 column names (``user_id,photo_id,
  author_id,show_cnt,complete_play_cnt,play_progress,like_cnt,cancel_like_cnt,direct_comment_cnt,
  reply_comment_cnt,comment_stay_duration,follow_cnt,cancel_follow_cnt,share_cnt``) plus ``p_date`` and
  ``timestamp`` (ms of the first play that day; M3 documents daily aggregates, the replica adds the time);
  one row per (user, photo, p_date). Short-video authors share the streamer id space (the same people);
- ``photo_tag.csv``: ``photo_id,first_level_category_name..fourth_level_category_name``; the first level
  uses the same strings as ``live_content_category`` (one category space for both domains);
- ``segment_text.csv`` (NOT in the real release; the replica's stand-in for what LARM's multimodal LLM reads
  from a live stream every 30 s: frames, speech, comments): ``live_id,timestamp,text``, one row per content
  segment of every room (``timestamp`` = Unix ms when the segment STARTS; the first segment of a room starts at
  its ``start_timestamp``, the next one ends it), sorted by (live_id, timestamp); ``text`` is a short English
  sentence of what the streamer is doing in that segment, e.g. "now pushing lanes in a moba game while answering
  viewer questions; chat is scrolling fast." (CSV-quoted when it holds a comma). Adapters treat it as optional.
  The text describes the whole segment; a real system knows it only once the window is over (LARM embeds the
  last 30 s), so a strictly causal reader takes the segment before the current one (sub-topics / events are
  sticky: ``text_stay``).

Real id magnitudes of the remapped release: user_id < 30,000, streamer/author ids < 470,000, live_id
< 12,000,000, photo_id < 7,000,000, live_name_id < 4,000,000 (distinct random draws).

Generative model (vectorised numpy, byte-deterministic for a given config)
--------------------------------------------------------------------------
People. ``n_streamers`` live streamers and ``n_authors`` short-video-only creators, each with a main and
a secondary topic (category) and a Zipf popularity; most streamers post short videos too.

Rooms. Each streamer goes live on a share of the days (popular ones more often), at an evening-heavy
hour, for a lognormal duration (median ``room_median_minutes``); a streamer's rooms never overlap. A
room has a topic (the streamer's main one mostly), a title per (streamer, topic) (or none), a quality,
and CONTENT THAT DRIFTS: it is cut into SCENES (mean ``segment_minutes``, piecewise-constant content)
whose topic is the room's topic or, with ``drift_rate``, another one, whose quality is the room's
quality plus ``segment_quality_sd`` noise, and whose hype is ``hype_sd`` noise.

Segments and their text. Each scene of D ms is cut into max(1, round(D / ``text_segment_seconds``)) SEGMENTS
of lognormal relative sizes (sd ``text_segment_sigma``): 30 s to a few minutes (the topic / quality / hype of a
segment are its scene's). A segment shows a SUB-TOPIC of the scene's topic (``n_subtopics`` per topic, e.g.
game: moba / fps / card / rpg; ``SUBTOPICS``) and a room EVENT (``n_events``: giveaway, q&a, tutorial, versus,
challenge, singing, ...; ``ROOM_EVENTS``). A scene's first segment draws both, each later one keeps the previous
one's sub-topic (and, separately, event) with chance ``text_stay``; draws follow the streamer's preferences
(log weights with sd ``text_streamer_sd``: the streamer id tells a little, not which one is on now). The
segment's text = one of 4 templates around one of two phrasings of the sub-topic, one of two of the event and
one of 8 filler clauses (noise: "the camera shakes a little"). Every phrase belongs to exactly one sub-topic /
event, so a keyword map (or a text encoder) recovers both from the words; the category and the author id tell
them only through the streamer's preferences.

Users. Each user has a hidden affinity per topic (normal, with an age/gender tilt), SHARED by both domains, a
hidden affinity per sub-topic (normal, centred within each topic: on top of the topic affinity) and per room
event (normal, centred), both with unit sd, a set of favourite creators (drawn by popularity x exp(affinity to
their topic)), an activity level and per-behaviour propensities (gifts: a few heavy spenders). A share
``live_sparse_share`` of the users is LIVE-SPARSE: ``live_sparse_activity`` times the others' live volume (~9
vs ~89 exposures at the default) but as many short videos as anyone (~575 plays).

Live exposures come in sessions at diurnal times. Each exposure has a time; the recommender picks one of
the rooms live then by popularity x exp(``interest_sharpness`` x affinity) x exp(segment hype) (+ favourites),
where the affinity is to the room's topic for ``1 - audience_drift`` and to the topic of the segment the room
shows NOW for ``audience_drift`` (it sees each candidate's segment at 1-minute resolution). Like an ID / category
based production system it does NOT see the segment's sub-topic or event.

PLANTED SIGNAL (the Moment&Cross premises)
- The moment: content AND audience change within minutes. ``click logit = b + click_affinity_weight *
  affinity(user, CURRENT segment's topic) + click_quality_weight * segment quality + hype_click_weight *
  segment hype + click_fan_weight * favourite + cross_author_weight * log1p(familiarity) + user bias +
  content`` (content: see LLM-Alignment below). Per scene, the topic may drift (``drift_rate``), the quality
  moves (``segment_quality_sd``), the hype (``hype_sd``, a burst: more exposures AND a higher click rate
  together) changes, and the audience the recommender sends follows the current topic (``audience_drift``). So
  the room's real-time counters (shows, clicks over the last minutes) tell the current click probability, and
  the same counters 30-60 minutes later describe other segments: a model trained on rows that arrive (with
  their features) an hour late learns stale room state.
- Late labels: a click first decides whether it comments / likes / gifts (logit offsets calibrated to
  ``comment_rate`` / ``like_rate`` / ``gift_rate`` per click); an engaging viewer stays (lognormal watch,
  median ``engaged_watch_minutes`` before the affinity / quality / fan / content lift, sd
  ``engaged_watch_sigma``), the others get the plain lognormal watch (median ``watch_median_s``, sd
  ``watch_sigma``) shifted so that the long-view (> 60 s) share of all clicks equals the plain lognormal's; no
  watch passes the room's end or the period's. An engaged click has 1 + Poisson events (more for longer
  watches and keener users), at times uniform over the watch. So first comments / likes / gifts arrive from
  seconds to an hour after the click.
- Cross-domain: short videos are chosen by the same affinities (softmax, ``rec_precision``) and from
  favourite creators (``favourite_share``), completed more when on-interest. Familiarity = the user's plays
  of the room's streamer's short videos before the exposure (as ``photo_interaction.csv`` shows them, a
  completed play counting twice); it raises the live click (``cross_author_weight``). Popular streamers
  appear in everyone's short videos and are exposed to off-interest users too, so without that weight an
  author match predicts no higher click rate; with it the short-video history (``V_aidhard``-style author
  match, category shares) tells what the live history of a live-sparse user cannot.
- Content semantics: the title embedding = topic direction + streamer style + noise, so it tells the
  room's topic (the streamer id alone averages over its topics).

PLANTED SIGNAL (the LLM-Alignment / LARM premise: the same room shows different content at different times, and
the author id averages over it)
- ``content = subtopic_click_weight * affinity(user, segment's sub-topic) + event_click_weight * affinity(user,
  segment's event)`` enters the click logit of an exposure during that segment, 0.5x the comment / like / gift
  logits and 0.4x the log watch (the long-view share stays the one without it: it moves WHO views long). Only the
  segment's text tells the sub-topic and the event: they change every few minutes inside a room, a streamer's
  segments of one topic spread over its sub-topics, and the recommender does not target them; the affinities
  are centred per user, so the match is a user x content interaction that neither the category nor the author
  id carries (and a room's click counters hardly do).

Rates (overall; logit offsets are calibrated to hit them): click ``click_rate`` of live exposures; per
clicked exposure comment ``comment_rate``, like ``like_rate``, gift ``gift_rate``. The real release has about
4.0 / 3.7 / 1.5 comment / like / gift EVENTS per 100 clicks; the replica RAISES the per-exposure rates so that
the sparse tasks have enough positives on a small replica.

Measured on the default config, seed 0 (reproduce: ``python -m recbench.data.kuailive_replica``, which prints
`measure_premises`; ``field=value`` arguments override config fields):
- size: 1,600 users, 1,200 streamers + 2,400 authors, 8.2K rooms, 86.6K scenes, 426K text segments, 101K live
  exposures (72K in the training dates), 0.88M short-video rows (0.91M plays); ~2.5-4 CPU seconds (the
  segments and their texts add ~0.3 s). Files ~120 MB, of which photo_interaction.csv 61 MB and
  segment_text.csv 54 MB (texts of ~100 characters).
- rates: click 0.20; per click long view (> 60 s) 0.38, comment 0.083, like 0.098, gift 0.034 (13.4 / 15.6 /
  5.1 events per 100 clicks); 23% of clicks engage; median watch 18 s for the others, 21 min for the engaged;
  gift price median 3, max 169x median. Within-room AUC of the (hidden) segment quality 0.62.
- moment: room-grouped AUC (impression weights) of the room's click rate over the 5 minutes BEFORE the
  exposure, for the exposure's click: 0.583; the same counter over the 5 minutes ending 30 min AFTER the
  exposure 0.486, ending 60 min after 0.489 (10.6K exposures with >= 3 shows in all three windows). Seeds 1 / 2:
  0.578 / 0.563 fresh vs 0.468-0.507 stale. Controls (same windows): without any drift (segment_quality_sd =
  drift_rate = hype = audience_drift = 0; the segments' sub-topics / events still change) 0.541 fresh vs
  0.488 / 0.503 stale (the rest: the same user re-shown the room within minutes; the chance level is a little
  below 0.5 because a row's counter holds other rows' labels); without hype 0.571; without audience drift
  0.597; without the text content (subtopic_click_weight = event_click_weight = 0) 0.593 vs 0.492 / 0.492.
- late labels: delay of a task's first event after the click (hidden exposure columns ``first_*_ms``):
  comment p10 / p50 / p90 0.9 / 7.2 / 30.0 min, > 5 min 0.60, > 30 min 0.100, > 60 min 0.016; like 0.9 / 7.1 /
  30.8 min, 0.60 / 0.106 / 0.022; gift 1.2 / 7.9 / 31.9 min, 0.63 / 0.112 / 0.024. Seen from the files (event
  attributed to the user's latest click in that room: re-entries shorten some delays): > 5 min 0.52 / 0.51 /
  0.56, > 30 min 0.078 / 0.077 / 0.091.
- cross: exposures of the valid + test dates (from 2025-05-20), history before the exposure. Users with < 5
  earlier live clicks (4.0K exposures): click rate 0.195 when the streamer appears in their earlier short
  videos (29% of their exposures) vs 0.132 when not; users with >= 5 (25.3K): 0.268 vs 0.204. AUC of the
  user's earlier short-video share of the room's category for the clicks: 0.594 (< 5 live clicks), 0.625
  (>= 5). Control with cross_author_weight = 0: 0.164 vs 0.150 (< 5), 0.191 vs 0.230 (>= 5).
- segment texts: length mean 88 s, p10 / p50 / p90 42 / 82 / 143 s (a scene shorter than half a segment is
  one short segment); 36,861 distinct texts (48 sub-topics x 2 phrasings x 6 events x 2 x 8 fillers x 4
  templates = 36,864 possible); a keyword map of the phrases recovers the sub-topic and the event of every
  segment. A (streamer, topic)'s most frequent sub-topic covers 0.47 of its segments (0.34 with
  text_streamer_sd = 0, the chance level of 4 sticky sub-topics), a streamer's most frequent event 0.35 (0.21).
- LLM-Alignment: click rate 0.305 when the segment shows the user's favourite sub-topic of its topic vs 0.168
  when not; 0.287 vs 0.186 for the favourite event. WITHIN (room category, streamer) groups (impression
  weights), where both ids are constant, the AUC for clicks of the user's hidden affinity to the current
  segment's sub-topic is 0.645, to its event 0.605, of the planted content term 0.680 (for scale: the affinity
  to the segment's topic 0.700). Among the clicks, long view 0.42 vs 0.29 and engagement 0.26 vs 0.16 when the
  user's sub-topic + event affinity is > 0 vs not. Seeds 1 / 2: 0.299 vs 0.167 / 0.299 vs 0.165 (sub-topic),
  content AUC 0.678 / 0.680. Control (subtopic_click_weight = event_click_weight = 0): 0.201 vs 0.202 and
  0.198 vs 0.202; AUCs 0.501 / 0.500.

`simulate_kuailive_replica(config)` returns the tables in memory plus the hidden values (segments with their
scene, hype, sub-topic and event; per-exposure segment topic / quality / hype / sub-topic / event / affinities /
content term / familiarity, first comment / like / gift delays; user affinities to topics, sub-topics and
events, with their names; favourites and live-sparse flags) for tests and oracles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recbench.records import atomic_folder
from recbench.data.sampling import (distinct_ids, rank_in_segment, sample_weighted, sample_within, shuffled_zipf,
                                    sigmoid, zipf)

CLICK_FILE, COMMENT_FILE, LIKE_FILE, GIFT_FILE = "click.csv", "comment.csv", "like.csv", "gift.csv"
NEGATIVE_FILE, ROOM_FILE, USER_FILE, STREAMER_FILE = "negative.csv", "room.csv", "user.csv", "streamer.csv"
TITLE_FILE = "title_embeddings.npy"
PHOTO_FILE, PHOTO_TAG_FILE = "photo_interaction.csv", "photo_tag.csv"
SEGMENT_TEXT_FILE = "segment_text.csv"  # optional for adapters: what each room shows per ~30 s - few min segment
CSV_FILES = (CLICK_FILE, COMMENT_FILE, LIKE_FILE, GIFT_FILE, NEGATIVE_FILE, ROOM_FILE, USER_FILE, STREAMER_FILE,
             PHOTO_FILE, PHOTO_TAG_FILE, SEGMENT_TEXT_FILE)
FILES = (*CSV_FILES, TITLE_FILE)

EVENT_COLUMNS = ("user_id", "live_id", "streamer_id", "timestamp")
ROOM_COLUMNS = ("p_date", "live_id", "streamer_id", "live_type", "start_timestamp", "end_timestamp",
                "live_content_category", "live_name_id")
USER_COLUMNS = ("user_id", "age", "gender", "country", "device_brand", "device_price", "reg_timestamp", "fans_num",
                "follow_num", "first_watch_live_timestamp", "accu_watch_live_cnt", "accu_watch_live_duration",
                "is_live_streamer", "is_photo_author", *(f"onehot_feat{k}" for k in range(7)))
STREAMER_COLUMNS = ("streamer_id", "gender", "age", "country", "device_brand", "device_price", "live_operation_tag",
                    "fans_user_num", "fans_group_fans_num", "follow_user_num", "first_live_timestamp",
                    "accu_live_cnt", "accu_live_duration", "accu_play_cnt", "accu_play_duration", "reg_timestamp",
                    *(f"onehot_feat{k}" for k in range(7)))
PHOTO_COLUMNS = ("user_id", "photo_id", "author_id", "show_cnt", "complete_play_cnt", "play_progress", "like_cnt",
                 "cancel_like_cnt", "direct_comment_cnt", "reply_comment_cnt", "comment_stay_duration", "follow_cnt",
                 "cancel_follow_cnt", "share_cnt", "p_date", "timestamp")
PHOTO_TAG_COLUMNS = ("photo_id", "first_level_category_name", "second_level_category_name",
                     "third_level_category_name", "fourth_level_category_name")
SEGMENT_TEXT_COLUMNS = ("live_id", "timestamp", "text")

FIRST_DAY = np.datetime64("2025-05-05")
N_DAYS = 21
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
WINDOW_START_MS = int((FIRST_DAY.astype("datetime64[ms]") - np.timedelta64(8, "h")).astype(np.int64))
WINDOW_END_MS = WINDOW_START_MS + N_DAYS * DAY_MS
BIN_MS = 5 * MINUTE_MS  # the recommender's time grid: rooms live in a 5-minute bin are its candidates
VIEW_MS = MINUTE_MS  # ... and it sees each candidate's current segment at this resolution
VIEW_STEPS = BIN_MS // VIEW_MS
LONG_VIEW_MS = 60_000  # a long view: a watch above one minute
TITLE_DIM = 128

TOPICS = ("chat", "shop", "game", "music", "dance", "outdoor", "food", "sports", "talent", "education",
          "beauty", "pk", "pets", "auto")
# What a segment shows beyond its category: per topic, SUB-TOPICS (name, two phrasings of what the streamer does);
# each phrase is unique to its sub-topic (a keyword map recovers the sub-topic from the text)
SUBTOPICS = {
    "chat": (("late night talk", "chatting about late night thoughts", "talking through a sleepless night"),
             ("love advice", "giving relationship advice", "reading love letters from viewers"),
             ("daily life", "telling stories from daily life", "describing what happened at work today"),
             ("jokes", "telling jokes and roasting friends", "doing a stand-up comedy set")),
    "shop": (("clothing", "trying on dresses and jackets", "showing outfits on a model"),
             ("cosmetics", "selling lipsticks at a discount", "listing cosmetics prices"),
             ("snacks", "tasting snacks from the warehouse", "selling spicy snack bundles"),
             ("gadgets", "demoing kitchen gadgets", "unboxing phone accessories")),
    "game": (("moba", "playing a ranked moba match", "pushing lanes in a moba game"),
             ("fps", "playing a first person shooter", "sniping in a battle royale shooter"),
             ("card", "playing a strategy card game", "building a deck for a card tournament"),
             ("rpg", "grinding a mobile rpg", "levelling up a fantasy rpg hero")),
    "music": (("pop covers", "covering pop songs", "performing a pop ballad cover"),
              ("guitar", "playing folk songs on guitar", "strumming an acoustic guitar"),
              ("rap", "freestyle rapping", "rapping over a drum beat"),
              ("piano", "playing the piano", "performing a piano piece")),
    "dance": (("kpop", "dancing kpop choreography", "practising a kpop routine"),
              ("street", "doing street dance", "breakdancing on the floor"),
              ("square dance", "leading a square dance", "square dancing with neighbours"),
              ("classical", "dancing ballet", "showing classical dance moves")),
    "outdoor": (("fishing", "fishing at a lake", "casting a line by the river"),
                ("hiking", "hiking up a mountain trail", "climbing a steep hill path"),
                ("camping", "setting up a campsite", "sitting by a campfire in the woods"),
                ("city walk", "walking through a night market", "touring the old city streets")),
    "food": (("mukbang", "eating a huge mukbang meal", "finishing a giant bowl of noodles"),
             ("home cooking", "cooking a family dinner", "stir frying vegetables at home"),
             ("street food", "trying street food stalls", "tasting grilled skewers on the street"),
             ("baking", "baking a layer cake", "decorating cupcakes with cream")),
    "sports": (("basketball", "commenting on a basketball game", "shooting hoops on a court"),
               ("football", "watching a football match", "doing football juggling tricks"),
               ("fitness", "leading a fitness workout", "doing a home workout with dumbbells"),
               ("billiards", "playing billiards", "lining up snooker shots")),
    "talent": (("magic", "performing magic tricks", "doing close-up card magic"),
               ("calligraphy", "writing calligraphy", "brushing chinese characters on paper"),
               ("painting", "painting a portrait", "sketching with charcoal"),
               ("crosstalk", "performing crosstalk comedy", "acting out a comic dialogue")),
    "education": (("english", "teaching english phrases", "correcting english pronunciation"),
                  ("math", "solving math problems", "explaining a geometry proof"),
                  ("exam prep", "sharing exam tips", "planning a study schedule for exams"),
                  ("history", "telling history stories", "explaining an ancient dynasty")),
    "beauty": (("makeup", "doing a full makeup look", "blending eyeshadow"),
               ("skincare", "walking through a skincare routine", "applying a sheet face mask"),
               ("hair", "styling hair with a curler", "braiding long hair"),
               ("nails", "painting nail art", "gluing on press-on nails")),
    "pk": (("singing duel", "battling in a singing duel", "out-singing the opponent"),
           ("gift race", "racing for the most gift points", "counting gift points against the rival"),
           ("team battle", "fighting a team battle with allied rooms", "coordinating allied rooms in a team battle"),
           ("forfeit", "doing a forfeit dare after losing", "taking a punishment round after a loss")),
    "pets": (("cats", "playing with cats", "feeding a kitten"),
             ("dogs", "walking a dog", "training a puppy"),
             ("aquarium", "cleaning an aquarium", "showing tropical fish"),
             ("birds", "talking to a parrot", "feeding pet birds")),
    "auto": (("car review", "reviewing a new car", "walking around an suv showroom"),
             ("driving", "giving driving lessons", "practising parallel parking"),
             ("repair", "repairing an engine", "changing car tyres"),
             ("electric cars", "charging an electric car", "testing an ev battery range")),
}
# ... and ROOM EVENTS (what happens in the room, any topic): name, two phrasings (unique to the event)
ROOM_EVENTS = (("giveaway", "while running a lucky draw giveaway", "and handing out red envelopes to viewers"),
               ("q&a", "while answering viewer questions", "during a question and answer session"),
               ("tutorial", "and explaining every step like a tutorial", "while teaching viewers step by step"),
               ("versus", "during a versus battle against another room", "while competing with a rival streamer"),
               ("challenge", "while taking on a viewer challenge", "and attempting a timed challenge"),
               ("singing", "and singing a song in between", "while humming along to a song"),
               ("shout-outs", "while reading out fan shout-outs", "and thanking gift senders by name"),
               ("backstage", "while showing the setup behind the camera", "and giving a tour behind the scenes"))
# plain words around them (noise: the same for every sub-topic / event)
_TEXT_TEMPLATES = ("the streamer is {s} {e}. {f}.", "now {s} {e}; {f}.", "{f}. the host keeps {s} {e}.",
                   "on screen: {s}, {e}. {f}.")
_TEXT_FILLERS = ("chat is scrolling fast", "background music is playing", "the room is a bit noisy",
                 "a few new followers joined", "the camera shakes a little", "the lighting is warm",
                 "viewers send hearts", "the stream lags for a second")
LIVE_TYPES = (1, 2, 3, 4, 5)
_LIVE_TYPE_PROBS = np.array([0.62, 0.18, 0.1, 0.06, 0.04])
AGES = ("12-17", "18-23", "24-30", "31-40", "41-49", "50+", "UNKNOWN")
_AGE_PROBS = np.array([0.05, 0.18, 0.26, 0.27, 0.14, 0.08, 0.02])
GENDERS = ("M", "F", "UNKNOWN")
_GENDER_PROBS = np.array([0.55, 0.43, 0.02])
BRANDS = ("HUAWEI", "OPPO", "VIVO", "XIAOMI", "APPLE", "HONOR", "OTHERS")
_BRAND_PROBS = np.array([0.2, 0.17, 0.17, 0.14, 0.14, 0.1, 0.08])
DEVICE_PRICES = ("0-1000", "1000-2000", "2000-3000", "3000-5000", "5000-8000", "8000-100000")
COUNT_RANGES = ("0-10", "10-100", "100-1000", "1000-10000", "10000-100000", "100000-1000000", "1000000-10000000")
OPERATION_TAGS = ("Relationship", "Game", "Sell", "Talent", "Chat", "Outdoor", "UNKNOWN")
# Relative traffic per local hour: users watch in the evening; streams mostly start 18-22h.
_WATCH_DIURNAL = np.array([3.0, 1.8, 1.0, 0.6, 0.5, 0.6, 1.0, 1.8, 2.4, 2.6, 2.8, 3.2,
                           4.0, 3.8, 3.0, 2.8, 3.0, 3.6, 4.6, 5.6, 6.4, 6.6, 5.8, 4.4])
_START_DIURNAL = np.array([1.0, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.0, 1.4, 1.6, 1.6, 1.6,
                           2.0, 1.8, 1.6, 1.6, 1.8, 2.4, 3.4, 4.2, 4.2, 3.2, 2.2, 1.4])


@dataclass(frozen=True)
class KuaiLiveReplicaConfig:
    """Knobs of the KuaiLive replica. Every field changes the written bytes (hash them for a cache key)."""

    n_users: int = 1600
    n_streamers: int = 1200
    n_authors: int = 2400  # short-video-only creators (most streamers post short videos too)
    live_exposures_per_user: float = 63.0  # mean live exposures per user (lognormal activity)
    short_per_live: float = 9.0  # short-video exposures per live exposure (Kuaishou: ~90% vs ~10%)
    seed: int = 0
    n_topics: int = 12  # categories in use (<= len(TOPICS))
    # --- people and rooms
    streamer_zipf: float = 1.1  # Zipf exponent of streamer / author popularity
    live_day_share: float = 0.33  # mean share of days a streamer goes live (popular ones more often)
    room_median_minutes: float = 60.0  # median room duration (lognormal, 5 min .. 8 h)
    room_sigma: float = 0.7
    no_title_rate: float = 0.08  # rooms with live_name_id = -1
    photo_author_rate: float = 0.7  # share of streamers who also post short videos
    photos_per_author: float = 15.0  # mean short videos per creator
    segment_minutes: float = 8.0  # mean length of a content SCENE inside a room (topic / quality / hype constant);
    #                               scenes are cut into the shorter text segments below
    drift_rate: float = 0.3  # share of segments whose topic is not the room's topic
    room_quality_sd: float = 0.5  # sd of a room's quality (on top of the streamer's)
    segment_quality_sd: float = 0.9  # sd of a segment's quality around its room's quality
    # --- users, sessions and the recommender
    activity_sigma: float = 0.6  # lognormal sd of the per-user exposure volume
    session_length: float = 6.0  # mean live exposures per session (geometric)
    exposure_gap_s: float = 40.0  # mean seconds between exposures of a session
    interest_sharpness: float = 1.0  # recommender weight exp(sharpness * affinity to the room topic)
    n_favourites: float = 6.0  # mean favourite creators per user
    rec_precision: float = 0.7  # share of short videos whose topic follows the user's interests
    favourite_share: float = 0.15  # share of short videos from favourite creators
    # --- live labels (the planted signal)
    click_rate: float = 0.2
    click_affinity_weight: float = 1.0
    click_quality_weight: float = 0.9
    click_fan_weight: float = 1.5
    click_user_sd: float = 0.5  # sd of the per-user click bias
    watch_median_s: float = 18.0  # median watch of a click (lognormal; long view = above a threshold)
    watch_sigma: float = 1.4
    comment_rate: float = 0.10  # share of clicks with >= 1 comment (real ~0.04 events / click, raised)
    like_rate: float = 0.12
    gift_rate: float = 0.04
    gift_price_median: float = 3.0  # coins per gift event (lognormal, heavy tail)
    gift_price_sigma: float = 1.6
    # --- short videos
    complete_rate: float = 0.3  # share of short-video rows with a complete play (their long view)
    short_affinity_weight: float = 1.5  # complete-play logit per unit of affinity to the video topic
    # --- the moment: the audience drifts with the content (Moment&Cross: content AND audience change within
    # minutes, so real-time room counters go stale)
    audience_drift: float = 0.5  # share of the recommender's affinity term that follows the CURRENT segment's
    #                              topic (the rest follows the room's topic): who is exposed changes per segment
    hype_sd: float = 1.0  # sd of a segment's hype: the recommender's log exposure boost for the segment ...
    hype_click_weight: float = 1.0  # ... and its click logit per unit (comment / like / gift: 0.3 per unit)
    # --- late labels: engaging viewers stay (a stream lasts ~1 h, gifts arrive > 30 min late)
    engaged_watch_minutes: float = 10.0  # median watch of a click with a comment / like / gift (lognormal, before
    #                                      the affinity / quality / fan lift); the other clicks are shortened so
    #                                      that the long-view share stays the plain lognormal's
    engaged_watch_sigma: float = 1.0
    # --- cross-domain: live-sparse users and short-video familiarity
    live_sparse_share: float = 0.3  # share of users with few live exposures but a typical short-video volume
    live_sparse_activity: float = 0.1  # their live exposure volume relative to the other users'
    cross_author_weight: float = 0.5  # click logit per log1p(familiarity): the user's plays of the room's
    #                                   streamer's short videos before the exposure, a completed play counting twice
    # --- LLM-Alignment: what each segment shows beyond the category and the streamer (segment_text.csv)
    text_segment_seconds: float = 90.0  # about the mean length of a text segment: a scene of D ms is cut into
    #                                     max(1, round(D / this)) pieces of lognormal relative sizes
    text_segment_sigma: float = 0.5  # lognormal sd of those relative sizes
    n_subtopics: int = 4  # sub-topics per topic in use (1..4, SUBTOPICS); a segment has one of its scene's topic
    n_events: int = 6  # events in use (1..len(ROOM_EVENTS)); a segment has one
    text_stay: float = 0.5  # chance that a segment keeps the previous segment's sub-topic (and, separately, event)
    #                         inside a scene; a scene's first segment draws both afresh
    text_streamer_sd: float = 0.7  # sd of a streamer's log preference per sub-topic / event (0: uniform draws):
    #                                how much the streamer id tells about the sub-topic / event
    subtopic_click_weight: float = 0.8  # click logit per unit of the user's (hidden) affinity to the segment's
    #                                     sub-topic (unit sd, centred within the topic: on top of the topic affinity)
    event_click_weight: float = 0.6  # ... and to the segment's event (unit sd, centred); engagement logits get 0.5x
    #                                  and the log watch 0.4x this content term (as for the topic affinity)

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"KuaiLiveReplicaConfig: {what}")

        need(self.n_users >= 1 and self.n_streamers >= 1 and self.n_authors >= 0, "need users and streamers")
        need(self.n_users < 30_000, "n_users must stay below 30,000 (the real user_id range)")
        need(2 <= self.n_topics <= len(TOPICS), f"n_topics must be in 2..{len(TOPICS)}")
        need(self.n_streamers + self.n_authors >= self.n_topics, "need at least n_topics creators")
        need(self.live_exposures_per_user >= 1 and self.short_per_live >= 0, "volumes must be positive")
        for name in ("live_day_share", "no_title_rate", "photo_author_rate", "drift_rate", "rec_precision",
                     "favourite_share"):
            need(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        for name in ("click_rate", "comment_rate", "like_rate", "gift_rate", "complete_rate"):
            need(0.0 < getattr(self, name) < 1.0, f"{name} must be in (0, 1)")
        for name in ("audience_drift", "live_sparse_share"):
            need(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        need(0.0 < self.live_sparse_activity <= 1.0, "live_sparse_activity must be in (0, 1]")
        for name in ("hype_sd", "hype_click_weight", "engaged_watch_sigma", "cross_author_weight"):
            need(getattr(self, name) >= 0.0, f"{name} must be >= 0")
        need(0.0 < self.engaged_watch_minutes <= 480.0, "engaged_watch_minutes must be in (0, 480]")
        need(5.0 <= self.text_segment_seconds <= 3600.0, "text_segment_seconds must be in [5, 3600]")
        need(1 <= self.n_subtopics <= min(len(v) for v in SUBTOPICS.values()),
             f"n_subtopics must be in 1..{min(len(v) for v in SUBTOPICS.values())}")
        need(1 <= self.n_events <= len(ROOM_EVENTS), f"n_events must be in 1..{len(ROOM_EVENTS)}")
        need(0.0 <= self.text_stay < 1.0, "text_stay must be in [0, 1)")
        for name in ("text_segment_sigma", "text_streamer_sd", "subtopic_click_weight", "event_click_weight"):
            need(getattr(self, name) >= 0.0, f"{name} must be >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class KuaiLiveReplica:
    """In-memory replica: the files' tables plus the hidden values."""

    tables: dict[str, pl.DataFrame]  # file name -> rows exactly as written (CSV files)
    title_embeddings: np.ndarray  # float32 [n_titles, 128], as written to title_embeddings.npy
    topic_names: tuple[str, ...]
    # one row per live exposure, file order of click.csv / negative.csv merged by time: user_id, live_id,
    # streamer_id, timestamp, clicked, segment (global index), segment_topic, segment_quality, affinity
    # (user to the segment topic), room_affinity (to the room topic), segment_hype, favourite, familiar,
    # segment_subtopic / segment_event (global indices), subtopic_affinity / event_affinity (user to them),
    # content (the planted click-logit term of the two), watch_ms, first_{comment,like,gift}_ms
    exposures: pl.DataFrame
    # one row per text segment (the rows of segment_text.csv, in (room, start) order): live_id, segment, scene,
    # start_ms, end_ms, topic, quality, hype (constant in a scene), subtopic (global index: topic * n_subtopics +
    # k, names in subtopic_names), event (index into event_names)
    segments: pl.DataFrame
    rooms: pl.DataFrame  # live_id, streamer_id, start_ms, end_ms, topic, quality, live_name_id
    affinity: np.ndarray  # [n_users, n_topics], row order = user_ids
    user_ids: np.ndarray
    favourites: pl.DataFrame  # user_id, creator_id (streamer or author id)
    live_sparse: np.ndarray  # bool per user (row order = user_ids): few live exposures, many short videos
    subtopic_names: tuple[str, ...] = ()  # "topic/sub-topic" per global sub-topic index
    event_names: tuple[str, ...] = ()
    subtopic_affinity: np.ndarray | None = None  # [n_users, n_topics * n_subtopics], centred within each topic
    event_affinity: np.ndarray | None = None  # [n_users, n_events], centred


# ----------------------------------------------------------------------------------------- helpers
def _bisect(rate_of, target: float, lo: float = -40.0, hi: float = 40.0) -> float:
    """x with rate_of(x) == target for an increasing rate_of (bisection)."""
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate_of(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def _thin(x: np.ndarray, size: int = 50_000) -> np.ndarray:
    """A fixed strided subsample: calibrating an offset on 50K rows is as good as on millions."""
    return x[::len(x) // size + 1]


def _logit_offset(x: np.ndarray, target: float) -> float:
    """b with mean(sigmoid(b + x)) == target: keeps the rate knobs meaningful whatever the weights."""
    x = _thin(x)
    return _bisect(lambda b: float(np.mean(sigmoid(b + x))), target)


def _count_before(keys: np.ndarray, times: np.ndarray, q_keys: np.ndarray, q_times: np.ndarray,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """For each query, how many (key, time) rows (or their summed weights) have the query's key and a time
    strictly before the query's time; keys >= 0 below 2**40, times >= 0 below 2**22 (seconds of the period)."""
    comp = (keys.astype(np.int64) << 22) + times
    order = np.argsort(comp, kind="stable")
    comp = comp[order]
    q = q_keys.astype(np.int64) << 22
    hi, lo = np.searchsorted(comp, q + q_times, side="left"), np.searchsorted(comp, q, side="left")
    if weights is None:
        return hi - lo
    cum = np.r_[0, np.cumsum(weights[order])]
    return cum[hi] - cum[lo]


def _local_date(ms: np.ndarray) -> np.ndarray:
    """YYYYMMDD (int) of the Asia/Shanghai date of Unix ms (via a table of the few days involved)."""
    day = (ms - WINDOW_START_MS) // DAY_MS
    first = int(day.min())
    days = FIRST_DAY + np.arange(first, int(day.max()) + 1).astype("timedelta64[D]")
    table = np.char.replace(np.datetime_as_string(days, unit="D"), "-", "").astype(np.int64)
    return table[day - first]


def _pick(rng: np.random.Generator, options: tuple, probs: np.ndarray | None, n: int) -> np.ndarray:
    p = None if probs is None else probs / probs.sum()
    return np.asarray(options, dtype=object)[rng.choice(len(options), size=n, p=p)].astype(str)


def _dates(rng: np.random.Generator, n: int, first: str, last: str) -> np.ndarray:
    lo, hi = np.datetime64(first), np.datetime64(last)
    days = rng.integers(0, int((hi - lo).astype(int)), n)
    return np.datetime_as_string(lo + days.astype("timedelta64[D]"), unit="D").astype(str)


def _count_range(count: np.ndarray) -> np.ndarray:
    """Range string ("100-1000") of the decade a count falls in (0-10 for counts below 10)."""
    decade = np.clip(np.floor(np.log10(np.maximum(count, 1))).astype(int), 0, len(COUNT_RANGES) - 1)
    return np.asarray(COUNT_RANGES)[decade]


# ----------------------------------------------------------------------------------------- phases
@dataclass(frozen=True)
class _People:
    """Streamers (indices < n_streamers) and short-video-only authors."""

    topic: np.ndarray  # main topic
    topic2: np.ndarray  # secondary topic
    pop: np.ndarray  # popularity weight (Zipf), within streamers and within authors
    quality: np.ndarray  # streamers' content quality
    n_photos: np.ndarray  # short videos posted (0 for streamers who post none)
    style: np.ndarray  # (P, 128) the creator's direction in the title embedding space
    ids: np.ndarray


@dataclass(frozen=True)
class _Users:
    affinity: np.ndarray  # (U, T)
    activity: np.ndarray  # relative live exposure volume, mean 1
    short_activity: np.ndarray  # relative short-video volume, mean 1
    live_sparse: np.ndarray  # bool: few live exposures, a typical short-video volume
    click_bias: np.ndarray
    propensity: np.ndarray  # (U, 3) comment, like, gift
    age: np.ndarray
    gender: np.ndarray
    fav_key: np.ndarray  # sorted user * P + person of every favourite pair
    ids: np.ndarray
    subtopic_affinity: np.ndarray | None = None  # (U, T * S): centred within each topic, unit sd
    event_affinity: np.ndarray | None = None  # (U, E): centred, unit sd


@dataclass(frozen=True)
class _Rooms:
    streamer: np.ndarray
    start: np.ndarray  # Unix ms
    end: np.ndarray
    topic: np.ndarray
    quality: np.ndarray
    title: np.ndarray  # live_name_id or -1
    live_type: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class _Segments:
    room: np.ndarray  # sorted by (room, start)
    start: np.ndarray  # Unix ms
    end: np.ndarray
    topic: np.ndarray
    quality: np.ndarray
    hype: np.ndarray  # log exposure boost (and click / engagement lift) of the segment
    scene: np.ndarray | None = None  # the scene a text segment belongs to (scenes: topic / quality / hype)
    subtopic: np.ndarray | None = None  # global sub-topic index (topic * n_subtopics + k)
    event: np.ndarray | None = None
    text: pl.Series | None = None  # what the segment shows, in words


def _draw_people(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig) -> _People:
    n_s, n_p, n_t = cfg.n_streamers, cfg.n_streamers + cfg.n_authors, cfg.n_topics
    topic_pop = 1.0 / np.arange(1, n_t + 1) ** 0.6
    topic = sample_weighted(topic_pop, rng.random(n_p))
    topic[:n_t] = np.arange(n_t)  # every topic has a streamer ...
    if cfg.n_authors >= n_t:
        topic[n_s:n_s + n_t] = np.arange(n_t)  # ... and a short-video author
    topic2 = (topic + rng.integers(1, n_t, n_p)) % n_t
    pop = np.r_[shuffled_zipf(rng, n_s, cfg.streamer_zipf), shuffled_zipf(rng, cfg.n_authors, cfg.streamer_zipf)]
    posts = np.r_[rng.random(n_s) < cfg.photo_author_rate, np.ones(cfg.n_authors, bool)]
    posts[:n_t] |= cfg.n_authors < n_t  # without authors, the first streamers cover every topic
    n_photos = np.where(posts, 1 + rng.poisson(max(cfg.photos_per_author - 1.0, 0.0), n_p), 0)
    style = rng.normal(0.0, 1.0, (n_p, TITLE_DIM)).astype(np.float32)
    return _People(topic=topic, topic2=topic2, pop=pop, quality=rng.normal(0.0, 0.4, n_p), n_photos=n_photos,
                   style=style, ids=distinct_ids(rng, n_p, 1, 470_000))


def _draw_users(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, people: _People) -> _Users:
    n_u, n_t, n_p = cfg.n_users, cfg.n_topics, len(people.pop)
    age = rng.choice(len(AGES), n_u, p=_AGE_PROBS / _AGE_PROBS.sum())
    gender = rng.choice(len(GENDERS), n_u, p=_GENDER_PROBS)
    tilt = rng.normal(0.0, 0.4, (len(AGES), n_t))[age] + rng.normal(0.0, 0.4, (len(GENDERS), n_t))[gender]
    affinity = rng.normal(0.0, 1.0, (n_u, n_t)) + tilt
    activity = rng.lognormal(0.0, cfg.activity_sigma, n_u)
    # favourites: per user, 8k creators drawn by popularity, then the k best by affinity to their topic
    # (+ Gumbel noise): popular, on-interest creators; duplicates collapse
    k = np.minimum(1 + rng.poisson(max(cfg.n_favourites - 1.0, 0.0), n_u), n_p)
    width = 8 * int(k.max())
    cand = sample_weighted(people.pop, rng.random(n_u * width)).reshape(n_u, width)
    score = affinity[np.arange(n_u)[:, None], people.topic[cand]] + rng.gumbel(size=cand.shape)
    ranked = np.take_along_axis(cand, np.argsort(-score, axis=1), 1)
    chosen = np.arange(width)[None, :] < k[:, None]
    users = np.broadcast_to(np.arange(n_u)[:, None], ranked.shape)
    fav_key = np.unique(users[chosen].astype(np.int64) * n_p + ranked[chosen])
    propensity = rng.normal(0.0, 1.0, (n_u, 3)) * np.array([0.8, 0.8, 1.3])  # gifts: heavy spenders
    # live-sparse users: a share watches little live but as many short videos as anyone (mean volumes kept)
    live_sparse = rng.random(n_u) < cfg.live_sparse_share
    live = activity * np.where(live_sparse, cfg.live_sparse_activity, 1.0)
    return _Users(affinity=affinity, activity=live / live.mean(), short_activity=activity / activity.mean(),
                  live_sparse=live_sparse, click_bias=rng.normal(0.0, cfg.click_user_sd, n_u), propensity=propensity,
                  age=age, gender=gender, fav_key=fav_key, ids=np.sort(distinct_ids(rng, n_u, 1, 30_000)))


def _is_favourite(users: _Users, n_people: int, user: np.ndarray, person: np.ndarray) -> np.ndarray:
    key = user.astype(np.int64) * n_people + person
    pos = np.minimum(np.searchsorted(users.fav_key, key), len(users.fav_key) - 1)
    return users.fav_key[pos] == key


def _draw_rooms(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, people: _People) -> _Rooms:
    """Rooms per (streamer, day); a streamer's rooms never overlap (a late room delays the next one)."""
    n_s = cfg.n_streamers
    activity = people.pop[:n_s] ** 0.3
    p_live = np.clip(cfg.live_day_share * activity / activity.mean(), 0.02, 0.95)
    live = rng.random((n_s, N_DAYS)) < p_live[:, None]
    hour = sample_weighted(_START_DIURNAL, rng.random((n_s, N_DAYS)).ravel()).reshape(n_s, N_DAYS)
    start = (WINDOW_START_MS + np.arange(N_DAYS)[None, :] * DAY_MS + hour * HOUR_MS
             + rng.integers(0, HOUR_MS, (n_s, N_DAYS)))
    minutes = np.clip(rng.lognormal(np.log(cfg.room_median_minutes), cfg.room_sigma, (n_s, N_DAYS)), 5, 480)
    duration = (minutes * MINUTE_MS).astype(np.int64)
    free_from = np.full(n_s, np.iinfo(np.int64).min // 2)
    for day in range(N_DAYS):  # 21 steps, vectorised over streamers
        start[:, day] = np.maximum(start[:, day], free_from + 10 * MINUTE_MS)
        free_from = np.where(live[:, day], start[:, day] + duration[:, day], free_from)
    live &= start < WINDOW_END_MS - 10 * MINUTE_MS
    streamer, day = np.nonzero(live)
    start = start[streamer, day]
    n_r = len(streamer)
    u = rng.random(n_r)
    topic = np.where(u < 0.7, people.topic[streamer],
                     np.where(u < 0.9, people.topic2[streamer], rng.integers(0, cfg.n_topics, n_r)))
    # one title per (streamer, topic); some rooms have none
    title_code = np.unique(streamer.astype(np.int64) * cfg.n_topics + topic, return_inverse=True)[1]
    title_ids = distinct_ids(rng, int(title_code.max()) + 1, 0, 4_000_000)
    title = np.where(rng.random(n_r) < cfg.no_title_rate, -1, title_ids[title_code])
    return _Rooms(streamer=streamer, start=start, end=start + duration[streamer, day], topic=topic,
                  quality=people.quality[streamer] + rng.normal(0.0, cfg.room_quality_sd, n_r), title=title,
                  live_type=np.asarray(LIVE_TYPES)[rng.choice(len(LIVE_TYPES), n_r, p=_LIVE_TYPE_PROBS)],
                  ids=distinct_ids(rng, n_r, 1, 12_000_000))


def _draw_segments(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, people: _People, rooms: _Rooms) -> _Segments:
    """Scenes, piecewise-constant content (topic, quality, hype): cut points uniform inside each room (a Poisson
    number of them)."""
    duration = rooms.end - rooms.start
    n_cuts = rng.poisson(duration / (cfg.segment_minutes * MINUTE_MS))
    cut_room = np.repeat(np.arange(len(duration)), n_cuts)
    cut_at = rooms.start[cut_room] + (rng.random(len(cut_room)) * duration[cut_room]).astype(np.int64)
    room = np.r_[np.arange(len(duration)), cut_room]
    start = np.r_[rooms.start, cut_at]
    order = np.lexsort((start, room))
    room, start = room[order], start[order]
    last = np.r_[room[1:] != room[:-1], True]
    end = np.where(last, rooms.end[room], np.r_[start[1:], 0])
    n = len(room)
    u = rng.random(n)
    drift = np.where(u < cfg.drift_rate * 0.5, people.topic2[rooms.streamer[room]], rng.integers(0, cfg.n_topics, n))
    topic = np.where(u < cfg.drift_rate, drift, rooms.topic[room])
    quality = rooms.quality[room] + rng.normal(0.0, cfg.segment_quality_sd, n)
    hype = rng.normal(0.0, cfg.hype_sd, n)
    return _Segments(room=room, start=start, end=end, topic=topic, quality=quality, hype=hype)


def _draw_text_segments(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, rooms: _Rooms,
                        scenes: _Segments) -> _Segments:
    """Cut each scene into ~text_segment_seconds pieces; each piece shows a sub-topic of the scene's topic and an
    event (sticky inside the scene, tilted by the streamer's preferences) and gets a text that names both."""
    duration = scenes.end - scenes.start
    n = np.where(duration > 0, np.maximum(1, np.rint(duration / (cfg.text_segment_seconds * 1000.0))), 0)
    n = n.astype(np.int64)
    n_sub, n_ev = cfg.n_subtopics, cfg.n_events
    sub_tilt = rng.normal(0.0, cfg.text_streamer_sd, (cfg.n_streamers, cfg.n_topics, n_sub))
    ev_tilt = rng.normal(0.0, cfg.text_streamer_sd, (cfg.n_streamers, n_ev))
    scene = np.repeat(np.arange(len(n)), n)
    m = len(scene)
    size = rng.lognormal(0.0, cfg.text_segment_sigma, m)
    total = np.bincount(scene, weights=size, minlength=len(n))
    done = np.cumsum(size) - np.repeat(np.cumsum(total) - total, n)  # relative size up to the piece's end
    first = rank_in_segment(n) == 0
    last = np.r_[first[1:], True]
    end = np.where(last, scenes.end[scene],
                   scenes.start[scene] + np.rint(done / total[scene] * duration[scene]).astype(np.int64))
    start = np.where(first, scenes.start[scene], np.r_[0, end[:-1]])
    room, topic = scenes.room[scene], scenes.topic[scene]
    streamer = rooms.streamer[room]

    def sticky(cum_table: np.ndarray, row: np.ndarray) -> np.ndarray:
        """A draw ~ the row's cumulative weights per piece, kept from the previous piece of the scene with chance
        text_stay."""
        fresh = first | (rng.random(m) >= cfg.text_stay)
        cum = cum_table[row]
        draw = np.minimum((rng.random(m)[:, None] * cum[:, -1:] >= cum).sum(1), cum.shape[1] - 1)
        return draw[np.maximum.accumulate(np.where(fresh, np.arange(m), 0))]

    sub = topic * n_sub + sticky(np.cumsum(np.exp(sub_tilt), -1).reshape(-1, n_sub), streamer * cfg.n_topics + topic)
    event = sticky(np.cumsum(np.exp(ev_tilt), -1), streamer)
    # the words: one of two phrasings of the sub-topic and of the event, one of the filler clauses (noise) and
    # a template; formatted once per distinct combination
    sub_phrases = [p for t in TOPICS[:cfg.n_topics] for entry in SUBTOPICS[t][:n_sub] for p in entry[1:]]
    event_phrases = [p for entry in ROOM_EVENTS[:n_ev] for p in entry[1:]]
    shape = (len(sub_phrases), len(event_phrases), len(_TEXT_FILLERS), len(_TEXT_TEMPLATES))
    code = np.ravel_multi_index((sub * 2 + rng.integers(0, 2, m), event * 2 + rng.integers(0, 2, m),
                                 rng.integers(0, shape[2], m), rng.integers(0, shape[3], m)), shape)
    keep = np.flatnonzero(end > start)  # (a piece rounds to 0 ms only with an extreme text_segment_sigma)
    combos, which = np.unique(code[keep], return_inverse=True)
    words = [_TEXT_TEMPLATES[t].format(s=sub_phrases[s], e=event_phrases[e], f=_TEXT_FILLERS[f])
             for s, e, f, t in zip(*(a.tolist() for a in np.unravel_index(combos, shape)))]
    scene = scene[keep]
    return _Segments(room=room[keep], start=start[keep], end=end[keep], topic=topic[keep],
                     quality=scenes.quality[scene], hype=scenes.hype[scene], scene=scene, subtopic=sub[keep],
                     event=event[keep], text=pl.Series("text", words, pl.String).gather(which))


def _draw_text_affinity(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, users: _Users) -> _Users:
    """Hidden user affinities to the sub-topics (centred within each topic: on top of the topic affinity) and to
    the events (centred); unit sd (zero with a single sub-topic / event)."""
    def centred(x: np.ndarray) -> np.ndarray:
        k = x.shape[-1]
        return (x - x.mean(-1, keepdims=True)) * (np.sqrt(k / (k - 1.0)) if k > 1 else 0.0)

    sub = centred(rng.normal(0.0, 1.0, (cfg.n_users, cfg.n_topics, cfg.n_subtopics)))
    event = centred(rng.normal(0.0, 1.0, (cfg.n_users, cfg.n_events)))
    return dataclasses.replace(users, subtopic_affinity=sub.reshape(cfg.n_users, -1), event_affinity=event)


def _segment_at(segments: _Segments, room: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Global index of the segment of `room` that contains time `t` (the room must contain t)."""
    key = segments.room.astype(np.int64) * (1 << 42) + (segments.start - WINDOW_START_MS + (1 << 40))
    query = room.astype(np.int64) * (1 << 42) + (t - WINDOW_START_MS + (1 << 40))
    return np.searchsorted(key, query, side="right") - 1


def _candidates(rooms: _Rooms) -> tuple[np.ndarray, np.ndarray]:
    """[n_bins, K] rooms live in each 5-minute bin of the period (-1 padded) and their count per bin."""
    n_bins = N_DAYS * DAY_MS // BIN_MS
    first = np.clip((rooms.start - WINDOW_START_MS) // BIN_MS, 0, n_bins)
    last = np.clip((rooms.end - 1 - WINDOW_START_MS) // BIN_MS, -1, n_bins - 1)
    count = np.maximum(last - first + 1, 0)
    room = np.repeat(np.arange(len(count)), count)
    bins = np.repeat(first, count) + rank_in_segment(count)
    order = np.argsort(bins, kind="stable")
    room, bins = room[order], bins[order]
    per_bin = np.bincount(bins, minlength=n_bins)
    table = np.full((n_bins, max(int(per_bin.max()), 1)), -1, np.int64)
    table[bins, rank_in_segment(per_bin)] = room
    return table, per_bin


def _recommender_view(rooms: _Rooms, segments: _Segments, table: np.ndarray) -> np.ndarray:
    """[n_bins, K, VIEW_STEPS] int32: the segment each candidate room shows at each minute of the bin (the
    minute's middle, clipped into the room's window): what the recommender sees of a room's content."""
    bins, k = np.nonzero(table >= 0)
    room = table[bins, k]
    at = (WINDOW_START_MS + bins[:, None] * BIN_MS
          + (np.arange(VIEW_STEPS) * VIEW_MS + VIEW_MS // 2)[None, :])
    at = np.clip(at, rooms.start[room][:, None], rooms.end[room][:, None] - 1)
    view = np.zeros((*table.shape, VIEW_STEPS), np.int32)
    view[bins, k] = _segment_at(segments, np.repeat(room, VIEW_STEPS), at.ravel()).reshape(-1, VIEW_STEPS)
    return view


def _draw_exposures(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, users: _Users, people: _People,
                    rooms: _Rooms, segments: _Segments) -> dict[str, np.ndarray]:
    """Sessions of exposures; each has a time and picks a room live then, by the room's popularity, the
    user's affinity to the room's and to its CURRENT segment's topic, and the segment's hype."""
    table, per_bin = _candidates(rooms)
    view = _recommender_view(rooms, segments, table)
    n_bins = len(per_bin)
    count = np.maximum(rng.poisson(cfg.live_exposures_per_user * users.activity), 2)
    user = np.repeat(np.arange(cfg.n_users), count)
    n_e = len(user)
    new_session = np.r_[True, user[1:] != user[:-1]] | (rng.random(n_e) < 1.0 / cfg.session_length)
    session = np.cumsum(new_session) - 1
    hour_of_bin = (np.arange(n_bins) * BIN_MS // HOUR_MS) % 24
    bin_weight = _WATCH_DIURNAL[hour_of_bin] * (per_bin > 0)
    session_bin = sample_weighted(bin_weight, rng.random(int(session[-1]) + 1))
    gap = rng.exponential(cfg.exposure_gap_s * 1000.0, n_e)
    offset = np.cumsum(gap) - np.cumsum(gap)[np.flatnonzero(new_session)][session]
    bins = session_bin[session] + (offset // BIN_MS).astype(np.int64)
    bad = (bins >= n_bins) | (per_bin[np.minimum(bins, n_bins - 1)] == 0)
    bins = np.where(bad, session_bin[session], bins)
    t = WINDOW_START_MS + bins * BIN_MS + (rng.random(n_e) * BIN_MS).astype(np.int64)
    step = (t - WINDOW_START_MS) % BIN_MS // VIEW_MS
    room = np.empty(n_e, np.int64)
    log_pop = np.log(people.pop[rooms.streamer]) + 0.3 * rooms.quality
    n_p = len(people.pop)
    for lo in range(0, n_e, 20_000):  # chunks bound the [chunk, K] candidate matrices
        sl = slice(lo, min(lo + 20_000, n_e))
        cand = table[bins[sl]]
        valid = cand >= 0
        c = np.where(valid, cand, 0)
        now = t[sl][:, None]
        live = valid & (rooms.start[c] <= now) & (now < rooms.end[c])
        pool = np.where(live.any(1)[:, None], live, valid)  # rooms live at t (else: the bin's rooms)
        seg = view[bins[sl][:, None], np.arange(c.shape[1])[None, :], step[sl][:, None]]
        u = user[sl][:, None]
        interest = ((1.0 - cfg.audience_drift) * users.affinity[u, rooms.topic[c]]
                    + cfg.audience_drift * users.affinity[u, segments.topic[seg]])
        score = (log_pop[c] + cfg.interest_sharpness * interest + segments.hype[seg]
                 + 0.5 * _is_favourite(users, n_p, u, rooms.streamer[c]) + rng.gumbel(size=c.shape))
        room[sl] = cand[np.arange(len(c)), np.argmax(np.where(pool, score, -np.inf), axis=1)]
    lo = np.maximum(rooms.start[room], WINDOW_START_MS + bins * BIN_MS)
    hi = np.minimum(rooms.end[room], WINDOW_START_MS + (bins + 1) * BIN_MS)
    inside = (rooms.start[room] <= t) & (t < rooms.end[room])
    t = np.where(inside, t, lo + (rng.random(n_e) * (hi - lo)).astype(np.int64))
    return {"user": user, "room": room, "t": t}


def _draw_live_feedback(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, users: _Users, people: _People,
                        rooms: _Rooms, segments: _Segments, exp: dict[str, np.ndarray],
                        familiar: np.ndarray) -> dict[str, np.ndarray]:
    """Click by the CURRENT segment (topic, quality, hype) and the short-video familiarity; which clicks
    comment / like / gift; watch time (long for engaging viewers); the events spread over the watch."""
    user, room, t = exp["user"], exp["room"], exp["t"]
    seg = _segment_at(segments, room, t)
    aff = users.affinity[user, segments.topic[seg]]
    quality, hype = segments.quality[seg], segments.hype[seg]
    fav = _is_favourite(users, len(people.pop), user, rooms.streamer[room])
    # what the segment shows beyond its topic: the user's affinity to its sub-topic and event (the text tells both)
    sub_aff = users.subtopic_affinity[user, segments.subtopic[seg]]
    ev_aff = users.event_affinity[user, segments.event[seg]]
    content = cfg.subtopic_click_weight * sub_aff + cfg.event_click_weight * ev_aff
    x = (cfg.click_affinity_weight * aff + cfg.click_quality_weight * quality + cfg.click_fan_weight * fav
         + users.click_bias[user] + cfg.hype_click_weight * hype + cfg.cross_author_weight * np.log1p(familiar)
         + content)
    clicked = rng.random(len(t)) < sigmoid(_logit_offset(x, cfg.click_rate) + x)
    clicks = np.flatnonzero(clicked)
    # which clicks engage (at least one comment / like / gift), calibrated to the per-click rates
    does = {}
    for k, (name, rate) in enumerate((("comment", cfg.comment_rate), ("like", cfg.like_rate),
                                      ("gift", cfg.gift_rate))):
        z = (users.propensity[user[clicks], k] + 0.5 * aff[clicks] + 0.3 * quality[clicks] + 0.5 * fav[clicks]
             + 0.3 * hype[clicks] + 0.5 * content[clicks])
        does[name] = rng.random(len(clicks)) < sigmoid(_logit_offset(z, rate) + z)
    engaged = does["comment"] | does["like"] | does["gift"]
    # watch: lognormal; engaging viewers stay (median engaged_watch_minutes); the other clicks are shifted so
    # that the long-view share is the one the plain lognormal gives; nobody watches past the room's end
    # (nor past the period's)
    lift = 0.4 * aff[clicks] + 0.3 * quality[clicks] + 0.5 * fav[clicks]
    plain = np.log(cfg.watch_median_s * 1000.0) + lift + rng.normal(0.0, cfg.watch_sigma, len(clicks))
    stay = np.log(cfg.engaged_watch_minutes * MINUTE_MS) + lift + rng.normal(0.0, cfg.engaged_watch_sigma,
                                                                                 len(clicks))
    left = np.minimum(rooms.end[room[clicks]], WINDOW_END_MS) - 1 - t[clicks]  # the log ends with the period

    def long_share(log_watch: np.ndarray, remaining: np.ndarray) -> float:
        return float(np.mean(np.minimum(np.exp(log_watch), remaining) > LONG_VIEW_MS))

    target = long_share(plain, left)  # (without the content term: it moves WHO views long, not how many)
    plain, stay = plain + 0.4 * content[clicks], stay + 0.4 * content[clicks]
    p_eng, p_rest = _thin(np.where(engaged, stay, np.inf)), _thin(plain)
    shift = _bisect(lambda b: long_share(np.where(np.isinf(p_eng), p_rest + b, p_eng), _thin(left)), target,
                    -10.0, 10.0)
    log_watch = np.where(engaged, stay, plain + shift)
    watch = np.zeros(len(t), np.int64)
    watch[clicks] = np.maximum(np.minimum(np.exp(log_watch).astype(np.int64), left), 0)
    # events: 1 + Poisson more per engaging click (mean 0.35 more, more for longer watches and keener users),
    # at times uniform over the watch; first[name] = delay of the first one (-1: none)
    events, first = {}, {}
    minutes = watch[clicks] / MINUTE_MS
    for k, name in enumerate(("comment", "like", "gift")):
        g = np.exp(users.propensity[user[clicks], k]) * minutes * does[name]
        g_mean = max(g.sum() / max(int(does[name].sum()), 1), 1e-9)
        n = does[name] * (1 + np.minimum(rng.poisson(0.35 * g / g_mean), 29))
        owner = np.repeat(clicks, n)
        delay = (rng.random(len(owner)) * watch[owner]).astype(np.int64)
        events[name] = {"exposure": owner, "t": t[owner] + delay}
        first[name] = np.full(len(t), -1, np.int64)
        starts = np.r_[0, np.cumsum(n)[:-1]][n > 0]
        first[name][clicks[n > 0]] = np.minimum.reduceat(delay, starts) if len(owner) else delay
    price = rng.lognormal(np.log(cfg.gift_price_median), cfg.gift_price_sigma, len(events["gift"]["t"]))
    events["gift"]["price"] = np.maximum(np.rint(price), 1).astype(np.int64)
    return {"first": first, "segment": seg, "affinity": aff, "room_affinity": users.affinity[user, rooms.topic[room]],
            "quality": quality, "hype": hype, "familiar": familiar, "favourite": fav, "clicked": clicked,
            "subtopic_affinity": sub_aff, "event_affinity": ev_aff, "content": content,
            "watch": watch, "events": events}


def _draw_photos(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, people: _People) -> dict[str, np.ndarray]:
    """Each posting creator's short videos; a video's topic is the creator's main one mostly."""
    author = np.repeat(np.arange(len(people.n_photos)), people.n_photos)
    topic = np.where(rng.random(len(author)) < 0.8, people.topic[author], people.topic2[author])
    return {"author": author, "topic": topic, "first": np.r_[0, np.cumsum(people.n_photos)[:-1]],
            "ids": distinct_ids(rng, len(author), 1, 7_000_000)}


def _draw_short_videos(rng: np.random.Generator, cfg: KuaiLiveReplicaConfig, users: _Users, people: _People,
                       photos: dict[str, np.ndarray]) -> pl.DataFrame:
    """Short-video exposures: same affinities as live, favourites, completion on interest; the volume
    follows the user's short-video activity (live-sparse users watch as many as anyone)."""
    n_t, n_p = cfg.n_topics, len(people.pop)
    user = np.repeat(np.arange(cfg.n_users),
                     rng.poisson(cfg.short_per_live * cfg.live_exposures_per_user * users.short_activity))
    n = len(user)
    day = rng.integers(0, N_DAYS, n)
    hour = sample_weighted(_WATCH_DIURNAL, rng.random(n))
    t = WINDOW_START_MS + day * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)
    # topic: the user's interests (softmax) or global popularity; creator by popularity inside the topic
    pref = np.exp(users.affinity - users.affinity.max(1, keepdims=True))
    cum = np.cumsum(pref / pref.sum(1, keepdims=True), axis=1)
    topic = np.minimum((rng.random(n)[:, None] >= cum[user]).sum(1), n_t - 1)
    popular = rng.random(n) >= cfg.rec_precision
    topic[popular] = sample_weighted(zipf(n_t, 0.6), rng.random(int(popular.sum())))
    posts = people.n_photos > 0
    creators = np.flatnonzero(posts)
    author = creators[sample_within(rng, people.pop[creators], people.topic[creators], n_t, topic)]
    # a share of the rows comes from the user's favourite creators (those who post)
    fav_user, fav_person = users.fav_key // n_p, users.fav_key % n_p
    keep = posts[fav_person]
    fav_user, fav_person = fav_user[keep], fav_person[keep]
    has_fav = np.bincount(fav_user, minlength=cfg.n_users) > 0
    from_fav = np.flatnonzero((rng.random(n) < cfg.favourite_share) & has_fav[user])
    pick = sample_within(rng, np.ones(len(fav_user)), fav_user, cfg.n_users, user[from_fav])
    author[from_fav] = fav_person[pick]
    photo = photos["first"][author] + (rng.random(n) * people.n_photos[author]).astype(np.int64)
    ptopic = photos["topic"][photo]
    aff = users.affinity[user, ptopic]
    fav = _is_favourite(users, n_p, user, author)
    x = cfg.short_affinity_weight * aff + 1.0 * fav + rng.normal(0.0, 0.5, n)
    complete = rng.random(n) < sigmoid(_logit_offset(x, cfg.complete_rate) + x)
    progress = np.where(complete, 1.0, np.round(np.clip(rng.beta(1.0, 2.0, n), 0.01, 0.99), 3))

    def flag(rate: float, weight: float) -> np.ndarray:
        z = weight * aff + 1.0 * fav
        return (rng.random(n) < sigmoid(_logit_offset(z, rate) + z)).astype(np.int64)

    like, comment, reply = flag(0.04, 0.8), flag(0.01, 0.5), flag(0.003, 0.5)
    stay = np.where((comment > 0) | (rng.random(n) < 0.05), rng.lognormal(np.log(8000.0), 1.0, n), 0.0)
    rows = pl.DataFrame({
        "user_id": users.ids[user], "photo_id": photos["ids"][photo], "author_id": people.ids[author],
        "show_cnt": np.ones(n, np.int64), "complete_play_cnt": complete.astype(np.int64), "play_progress": progress,
        "like_cnt": like, "cancel_like_cnt": like * (rng.random(n) < 0.05), "direct_comment_cnt": comment,
        "reply_comment_cnt": reply, "comment_stay_duration": stay.astype(np.int64), "follow_cnt": flag(0.003, 0.5),
        "cancel_follow_cnt": (rng.random(n) < 0.0005).astype(np.int64), "share_cnt": flag(0.005, 0.5),
        "p_date": _local_date(t), "timestamp": t,
    })
    return _daily_aggregate(rows, user * len(photos["ids"]) + photo, day)


def _daily_aggregate(rows: pl.DataFrame, pair: np.ndarray, day: np.ndarray) -> pl.DataFrame:
    """One row per (user, photo, p_date), as in KuaiLive-M3: counts summed, progress averaged, time = the
    day's first play; rows ordered by (user, time). numpy segment sums (a polars group_by is slower here)."""
    user, t = rows["user_id"].to_numpy(), rows["timestamp"].to_numpy()
    by_time = np.argsort((np.unique(user, return_inverse=True)[1].astype(np.int64) << 32) + (t - WINDOW_START_MS),
                         kind="stable")
    _, first, group = np.unique((pair * N_DAYS + day)[by_time], return_index=True, return_inverse=True)
    out = np.argsort(first)  # groups in the order of their first play: (user, time)
    size = np.bincount(group)
    columns = {}
    for name in PHOTO_COLUMNS:
        values = rows[name].to_numpy()[by_time]
        if name in ("user_id", "photo_id", "author_id", "p_date", "timestamp"):
            columns[name] = values[first][out]
        elif name == "play_progress":
            columns[name] = np.round(np.bincount(group, weights=values) / size, 3)[out]
        else:
            columns[name] = np.bincount(group, weights=values)[out].astype(np.int64)
    return pl.DataFrame(columns)


# ------------------------------------------------------------------------------------------ tables
def _event_table(user_ids: np.ndarray, live_ids: np.ndarray, streamer_ids: np.ndarray, t: np.ndarray,
                 **extra: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"user_id": user_ids, "live_id": live_ids, "streamer_id": streamer_ids, "timestamp": t,
                         **extra}).sort("timestamp", "user_id", "live_id", maintain_order=True)


def _room_table(rooms: _Rooms, people: _People, topic_names: np.ndarray) -> pl.DataFrame:
    """One row per (room, local date it covers): cross-midnight rooms repeat their live_id."""
    first_day = (rooms.start - WINDOW_START_MS) // DAY_MS
    last_day = (rooms.end - 1 - WINDOW_START_MS) // DAY_MS
    n_days = last_day - first_day + 1
    room = np.repeat(np.arange(len(n_days)), n_days)
    day = first_day[room] + rank_in_segment(n_days)
    return pl.DataFrame({
        "p_date": _local_date(WINDOW_START_MS + day * DAY_MS), "live_id": rooms.ids[room],
        "streamer_id": people.ids[rooms.streamer[room]], "live_type": rooms.live_type[room],
        "start_timestamp": rooms.start[room], "end_timestamp": rooms.end[room],
        "live_content_category": topic_names[rooms.topic[room]], "live_name_id": rooms.title[room],
    }).sort("p_date", "live_id")


def _user_table(rng: np.random.Generator, users: _Users, live_count: np.ndarray) -> pl.DataFrame:
    n = len(users.ids)
    watch_cnt = (live_count * rng.lognormal(3.0, 1.0, n)).astype(np.int64)
    return pl.DataFrame({
        "user_id": users.ids, "age": np.asarray(AGES)[users.age], "gender": np.asarray(GENDERS)[users.gender],
        "country": np.where(rng.random(n) < 0.97, "CN", "UNKNOWN"), "device_brand": _pick(rng, BRANDS, _BRAND_PROBS, n),
        "device_price": _pick(rng, DEVICE_PRICES, np.array([1, 3, 4, 4, 2, 1.0]), n),
        "reg_timestamp": _dates(rng, n, "2016-01-01", "2025-04-01"),
        "fans_num": _count_range(rng.lognormal(2.0, 1.5, n)), "follow_num": _count_range(rng.lognormal(4.0, 1.2, n)),
        "first_watch_live_timestamp": _dates(rng, n, "2018-01-01", "2025-04-20"),
        "accu_watch_live_cnt": _count_range(watch_cnt),
        "accu_watch_live_duration": _count_range(watch_cnt * rng.lognormal(11.0, 1.0, n)),
        "is_live_streamer": (rng.random(n) < 0.05).astype(np.int64),
        "is_photo_author": (rng.random(n) < 0.3).astype(np.int64),
        **{f"onehot_feat{k}": (rng.random(n) < 0.1 + 0.1 * k).astype(np.int64) for k in range(7)},
    }).select(USER_COLUMNS)


def _streamer_table(rng: np.random.Generator, people: _People, n_streamers: int) -> pl.DataFrame:
    n = n_streamers
    fans = people.pop[:n] / people.pop[:n].max() * 3e6 * rng.lognormal(0.0, 0.5, n)
    lives = rng.lognormal(4.0, 1.0, n)
    return pl.DataFrame({
        "streamer_id": people.ids[:n], "gender": _pick(rng, GENDERS, _GENDER_PROBS, n),
        "age": _pick(rng, AGES, _AGE_PROBS, n), "country": np.where(rng.random(n) < 0.98, "CN", "UNKNOWN"),
        "device_brand": _pick(rng, BRANDS, _BRAND_PROBS, n),
        "device_price": _pick(rng, DEVICE_PRICES, np.array([1, 2, 3, 4, 3, 2.0]), n),
        "live_operation_tag": _pick(rng, OPERATION_TAGS, None, n), "fans_user_num": _count_range(fans),
        "fans_group_fans_num": _count_range(fans * 0.05), "follow_user_num": _count_range(rng.lognormal(5.0, 1.0, n)),
        "first_live_timestamp": _dates(rng, n, "2017-01-01", "2025-04-20"), "accu_live_cnt": _count_range(lives),
        "accu_live_duration": _count_range(lives * 3.6e6), "accu_play_cnt": _count_range(fans * lives * 0.01),
        "accu_play_duration": _count_range(fans * lives * 600.0),
        "reg_timestamp": _dates(rng, n, "2015-01-01", "2025-01-01"),
        **{f"onehot_feat{k}": (rng.random(n) < 0.15 + 0.1 * k).astype(np.int64) for k in range(7)},
    }).select(STREAMER_COLUMNS).sort("streamer_id")


def _photo_tag_table(photos: dict[str, np.ndarray], topic_names: np.ndarray) -> pl.DataFrame:
    first = topic_names[photos["topic"]]
    sub = pl.Series(photos["ids"] % 5)
    level = pl.col("first_level_category_name") + pl.lit("_")
    return pl.DataFrame({"photo_id": photos["ids"], "first_level_category_name": first}).with_columns(
        second_level_category_name=level + (sub % 3).cast(pl.String),
        third_level_category_name=level + sub.cast(pl.String),
        fourth_level_category_name=pl.lit("UNKNOWN"),
    ).select(PHOTO_TAG_COLUMNS).sort("photo_id")


def _title_embeddings(rng: np.random.Generator, people: _People, rooms: _Rooms, n_topics: int) -> np.ndarray:
    """Row k = title of the k-th smallest live_name_id: topic direction + creator style + noise."""
    titled = rooms.title >= 0
    title, first = np.unique(rooms.title[titled], return_index=True)
    topic = rooms.topic[titled][first]
    streamer = rooms.streamer[titled][first]
    directions = rng.normal(0.0, 1.0, (n_topics, TITLE_DIM))
    emb = 1.0 * directions[topic] + 0.5 * people.style[streamer] + 0.4 * rng.normal(0.0, 1.0, (len(title), TITLE_DIM))
    return (emb / np.sqrt(TITLE_DIM)).astype(np.float32)


# ------------------------------------------------------------------------------------------ simulate
def simulate_kuailive_replica(config: KuaiLiveReplicaConfig) -> KuaiLiveReplica:
    config.validate()
    # spawn(n) children do not depend on n: streams 9 and 10 (the segment texts) left streams 0-8 as they were
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(11)]
    people = _draw_people(streams[0], config)
    users = _draw_text_affinity(streams[10], config, _draw_users(streams[1], config, people))
    rooms = _draw_rooms(streams[2], config, people)
    segments = _draw_text_segments(streams[9], config, rooms, _draw_segments(streams[3], config, people, rooms))
    exp = _draw_exposures(streams[4], config, users, people, rooms, segments)
    photos = _draw_photos(streams[6], config, people)
    short = _draw_short_videos(streams[6], config, users, people, photos)
    u_id, l_id, s_id = users.ids[exp["user"]], rooms.ids[exp["room"]], people.ids[rooms.streamer[exp["room"]]]
    # familiarity: plays of the room's streamer's short videos before the exposure, a completed play counting
    # twice (as the file shows them: daily rows at the day's first play)
    familiar = _count_before(short["user_id"].to_numpy() * 470_000 + short["author_id"].to_numpy(),
                             (short["timestamp"].to_numpy() - WINDOW_START_MS) // 1000,
                             u_id * 470_000 + s_id, (exp["t"] - WINDOW_START_MS) // 1000,
                             weights=(short["show_cnt"] + short["complete_play_cnt"]).to_numpy())
    fb = _draw_live_feedback(streams[5], config, users, people, rooms, segments, exp, familiar)
    live_count = np.bincount(exp["user"], minlength=config.n_users)
    names = np.asarray(TOPICS[:config.n_topics])

    clicked = fb["clicked"]
    tables = {
        CLICK_FILE: _event_table(u_id[clicked], l_id[clicked], s_id[clicked], exp["t"][clicked],
                                 watch_live_time=fb["watch"][clicked]),
        NEGATIVE_FILE: _event_table(u_id[~clicked], l_id[~clicked], s_id[~clicked], exp["t"][~clicked]),
    }
    for name, file in (("comment", COMMENT_FILE), ("like", LIKE_FILE), ("gift", GIFT_FILE)):
        ev = fb["events"][name]
        extra = {"gift_price": ev["price"]} if name == "gift" else {}
        tables[file] = _event_table(u_id[ev["exposure"]], l_id[ev["exposure"]], s_id[ev["exposure"]], ev["t"], **extra)
    tables[ROOM_FILE] = _room_table(rooms, people, names)
    tables[USER_FILE] = _user_table(streams[7], users, live_count)
    tables[STREAMER_FILE] = _streamer_table(streams[7], people, config.n_streamers)
    tables[PHOTO_FILE] = short
    tables[PHOTO_TAG_FILE] = _photo_tag_table(photos, names)
    tables[SEGMENT_TEXT_FILE] = pl.DataFrame({"live_id": rooms.ids[segments.room], "timestamp": segments.start,
                                              "text": segments.text}).sort("live_id", "timestamp")
    titles = _title_embeddings(streams[8], people, rooms, config.n_topics)

    exposures = pl.DataFrame({
        "user_id": u_id, "live_id": l_id, "streamer_id": s_id, "timestamp": exp["t"], "clicked": clicked,
        "segment": fb["segment"], "segment_topic": segments.topic[fb["segment"]],
        "segment_quality": fb["quality"], "affinity": fb["affinity"], "room_affinity": fb["room_affinity"],
        "segment_hype": fb["hype"], "favourite": fb["favourite"], "familiar": fb["familiar"],
        "segment_subtopic": segments.subtopic[fb["segment"]], "segment_event": segments.event[fb["segment"]],
        "subtopic_affinity": fb["subtopic_affinity"], "event_affinity": fb["event_affinity"],
        "content": fb["content"], "watch_ms": fb["watch"],
        **{f"first_{name}_ms": fb["first"][name] for name in ("comment", "like", "gift")},
    }).sort("timestamp", "user_id", "live_id", maintain_order=True)
    fav_user, fav_person = np.divmod(users.fav_key, len(people.pop))
    return KuaiLiveReplica(
        tables={name: tables[name] for name in CSV_FILES}, title_embeddings=titles, topic_names=tuple(names),
        exposures=exposures,
        segments=pl.DataFrame({"live_id": rooms.ids[segments.room], "segment": np.arange(len(segments.room)),
                               "scene": segments.scene, "start_ms": segments.start, "end_ms": segments.end,
                               "topic": segments.topic, "quality": segments.quality, "hype": segments.hype,
                               "subtopic": segments.subtopic, "event": segments.event}),
        rooms=pl.DataFrame({"live_id": rooms.ids, "streamer_id": people.ids[rooms.streamer], "start_ms": rooms.start,
                            "end_ms": rooms.end, "topic": rooms.topic, "quality": rooms.quality,
                            "live_name_id": rooms.title}),
        affinity=users.affinity, user_ids=users.ids, live_sparse=users.live_sparse,
        favourites=pl.DataFrame({"user_id": users.ids[fav_user], "creator_id": people.ids[fav_person]}),
        subtopic_names=tuple(f"{t}/{entry[0]}" for t in names for entry in SUBTOPICS[t][:config.n_subtopics]),
        event_names=tuple(entry[0] for entry in ROOM_EVENTS[:config.n_events]),
        subtopic_affinity=users.subtopic_affinity, event_affinity=users.event_affinity)


def write_kuailive_replica(out_dir: Path, config: KuaiLiveReplicaConfig) -> list[Path]:
    """Write the replica files into `out_dir` atomically (temp folder + rename); return their paths.

    Output is byte-for-byte deterministic for a given config."""
    replica = simulate_kuailive_replica(config)
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        for name, table in replica.tables.items():
            table.write_csv(tmp / name)
        np.save(tmp / TITLE_FILE, replica.title_embeddings)
    return [out_dir / name for name in FILES]


# ------------------------------------------------------------------------------------------ premises


def _room_window_rate(room: np.ndarray, t: np.ndarray, clicked: np.ndarray, lo_ms: np.ndarray,
                      hi_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shows, click rate) of each row's room over exposures at times in [lo_ms, hi_ms); rows sorted by
    (room, t), rooms numbered 0.. (below 2**20)."""
    key = room.astype(np.int64) << 42
    comp = key + (t - WINDOW_START_MS + (1 << 40))
    lo = np.searchsorted(comp, key + (lo_ms - WINDOW_START_MS + (1 << 40)), side="left")
    hi = np.searchsorted(comp, key + (hi_ms - WINDOW_START_MS + (1 << 40)), side="left")
    cum = np.r_[0, np.cumsum(clicked)]
    shows = hi - lo
    return shows, (cum[hi] - cum[lo]) / np.maximum(shows, 1)


def measure_premises(replica: KuaiLiveReplica, min_shows: int = 3) -> dict[str, float]:
    """The Moment&Cross premises measured on a replica (the numbers in the module docstring).

    - ``fresh_room_gauc`` / ``stale30_room_gauc`` / ``stale60_room_gauc``: room-grouped AUC (impression
      weights) of the room's click rate over the 5 minutes before the exposure, resp. over the 5 minutes
      ending 30 / 60 minutes after it, for the exposure's click; on the exposures where all three windows
      hold >= ``min_shows`` shows (``counter_rows``);
    - ``{comment,like,gift}_{p10,p50,p90}_min`` and ``..._over_{5,30,60}min``: delay of each task's FIRST
      event after the click (minutes; share of the clicks with that task later than 5 / 30 / 60 minutes);
    - on the exposures of the valid + test dates (from 2025-05-20), with the user's history before the
      exposure: click rate when the streamer appears in the user's earlier short videos (``ctr_aid_*``) or
      not (``ctr_noaid_*``), for users with < 5 (``sparse``) or >= 5 (``rich``) earlier live clicks, and the
      AUC of the user's earlier short-video share of the room's category for clicks (``share_auc_*``);
    - the segment texts: ``text_segments``, their length (``segment_{mean,p10,p50,p90}_s``), ``distinct_texts``;
      the share of a (streamer, topic)'s segments in its most frequent sub-topic (``streamer_top_subtopic``) and
      of a streamer's in its most frequent event (``streamer_top_event``), segment-weighted; the click rate when
      the segment's sub-topic is the user's favourite of that topic or not (``ctr_fav_subtopic`` /
      ``ctr_other_subtopic``), the same for the event (``ctr_fav_event`` / ``ctr_other_event``); among the clicks,
      the long-view and engagement (>= 1 comment / like / gift) shares when the user's sub-topic + event affinity
      is > 0 or not (``{long_view,engage}_liked`` / ``..._not_liked``); and, WITHIN
      (room category, streamer) groups (impression weights), the AUC for clicks of the hidden user affinity to
      the segment's sub-topic (``subtopic_gauc``), event (``event_gauc``), their planted click term
      (``content_gauc``) and, for scale, the affinity to the segment's topic (``topic_gauc``)."""
    from recbench.metrics import auc, gauc

    out: dict[str, float] = {}
    ex = replica.exposures.sort("live_id", "timestamp")
    room, t = np.unique(ex["live_id"].to_numpy(), return_inverse=True)[1], ex["timestamp"].to_numpy()
    clicked = ex["clicked"].to_numpy().astype(np.float64)
    windows = {"fresh": (t - 5 * MINUTE_MS, t), "stale30": (t + 25 * MINUTE_MS, t + 30 * MINUTE_MS + 1),
               "stale60": (t + 55 * MINUTE_MS, t + 60 * MINUTE_MS + 1)}
    counters = {name: _room_window_rate(room, t, clicked, lo, hi) for name, (lo, hi) in windows.items()}
    seen = np.logical_and.reduce([shows >= min_shows for shows, _ in counters.values()])
    out["counter_rows"] = float(seen.sum())
    for name, (_, rate) in counters.items():
        out[f"{name}_room_gauc"] = gauc(rate[seen], clicked[seen], room[seen], weight="impressions")

    ex = replica.exposures
    for task in ("comment", "like", "gift"):
        delay = ex[f"first_{task}_ms"].to_numpy()
        minutes = delay[delay >= 0] / MINUTE_MS
        for p in (10, 50, 90):
            out[f"{task}_p{p}_min"] = float(np.percentile(minutes, p))
        for m in (5, 30, 60):
            out[f"{task}_over_{m}min"] = float((minutes > m).mean())

    tables = replica.tables
    t = ex["timestamp"].to_numpy()
    user, streamer = ex["user_id"].to_numpy(), ex["streamer_id"].to_numpy()
    clicked = ex["clicked"].to_numpy()
    sec = (t - WINDOW_START_MS) // 1000
    category = {name: k for k, name in enumerate(replica.topic_names)}
    room_cat = tables[ROOM_FILE].unique("live_id").select(
        "live_id", pl.col("live_content_category").replace_strict(category).alias("cat"))
    cat = ex.select("live_id").join(room_cat, on="live_id", how="left", maintain_order="left")["cat"].to_numpy()
    short = tables[PHOTO_FILE].join(tables[PHOTO_TAG_FILE].select(
        "photo_id", pl.col("first_level_category_name").replace_strict(category).alias("cat")), on="photo_id")
    s_user, s_sec = short["user_id"].to_numpy(), (short["timestamp"].to_numpy() - WINDOW_START_MS) // 1000
    n_aid = _count_before(s_user * 470_000 + short["author_id"].to_numpy(), s_sec, user * 470_000 + streamer, sec)
    n_cat = _count_before(s_user * 64 + short["cat"].to_numpy(), s_sec, user * 64 + cat, sec)
    n_short = _count_before(s_user, s_sec, user, sec)
    n_live_clicks = _count_before(user[clicked], sec[clicked], user, sec)
    late = t >= WINDOW_START_MS + 15 * DAY_MS  # the valid + test dates
    share = n_cat / np.maximum(n_short, 1)
    for name, group in (("sparse", late & (n_live_clicks < 5)), ("rich", late & (n_live_clicks >= 5))):
        out[f"rows_{name}"] = float(group.sum())
        out[f"ctr_aid_{name}"] = float(clicked[group & (n_aid > 0)].mean())
        out[f"ctr_noaid_{name}"] = float(clicked[group & (n_aid == 0)].mean())
        out[f"aid_share_{name}"] = float((n_aid[group] > 0).mean())
        out[f"share_auc_{name}"] = auc(share[group], clicked[group])
    out |= _measure_text(replica)
    return out


def _measure_text(replica: KuaiLiveReplica) -> dict[str, float]:
    """The segment-text numbers of `measure_premises`."""
    from recbench.metrics import gauc

    out: dict[str, float] = {}
    seg = replica.segments
    seconds = (seg["end_ms"] - seg["start_ms"]).to_numpy() / 1000
    out["text_segments"] = float(seg.height)
    out["segment_mean_s"] = float(seconds.mean())
    for q in (10, 50, 90):
        out[f"segment_p{q}_s"] = float(np.percentile(seconds, q))
    out["distinct_texts"] = float(replica.tables[SEGMENT_TEXT_FILE]["text"].n_unique())
    seg = seg.join(replica.rooms.select("live_id", "streamer_id"), on="live_id")
    for name, keys in (("subtopic", ["streamer_id", "topic"]), ("event", ["streamer_id"])):
        counts = seg.group_by(*keys, name).len()
        top = counts.group_by(keys).agg(pl.col("len").max().alias("top"), pl.col("len").sum().alias("n"))
        out[f"streamer_top_{name}"] = float(top["top"].sum() / top["n"].sum())
    ex = replica.exposures
    user = np.searchsorted(replica.user_ids, ex["user_id"].to_numpy())
    n_sub = replica.subtopic_affinity.shape[1] // len(replica.topic_names)
    topic = ex["segment_topic"].to_numpy()
    by_topic = replica.subtopic_affinity.reshape(len(replica.user_ids), -1, n_sub)[user, topic]
    fav_sub = ex["segment_subtopic"].to_numpy() == topic * n_sub + by_topic.argmax(1)
    fav_event = ex["segment_event"].to_numpy() == replica.event_affinity.argmax(1)[user]
    clicked = ex["clicked"].to_numpy()
    for name, fav in (("subtopic", fav_sub), ("event", fav_event)):
        out[f"ctr_fav_{name}"] = float(clicked[fav].mean())
        out[f"ctr_other_{name}"] = float(clicked[~fav].mean())
    clicks = ex.filter("clicked")
    liked = clicks["subtopic_affinity"].to_numpy() + clicks["event_affinity"].to_numpy() > 0
    long_view = clicks["watch_ms"].to_numpy() > LONG_VIEW_MS
    engaged = (clicks.select(pl.max_horizontal("first_comment_ms", "first_like_ms", "first_gift_ms"))
               .to_series().to_numpy() >= 0)
    for name, flag in (("long_view", long_view), ("engage", engaged)):
        out[f"{name}_liked"] = float(flag[liked].mean())
        out[f"{name}_not_liked"] = float(flag[~liked].mean())
    room_topic = ex.select("live_id").join(replica.rooms.select("live_id", "topic"), on="live_id", how="left",
                                           maintain_order="left")["topic"].to_numpy()
    group = ex["streamer_id"].to_numpy() * 64 + room_topic
    for name, column in (("subtopic", "subtopic_affinity"), ("event", "event_affinity"), ("content", "content"),
                         ("topic", "affinity")):
        out[f"{name}_gauc"] = gauc(ex[column].to_numpy(), clicked, group, weight="impressions")
    return out


if __name__ == "__main__":  # python -m recbench.data.kuailive_replica [field=value ...]: the premises, measured
    import sys

    fields = {f.name: f.type for f in dataclasses.fields(KuaiLiveReplicaConfig)}
    overrides = dict(arg.split("=", 1) for arg in sys.argv[1:])
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise SystemExit(f"unknown KuaiLiveReplicaConfig field(s): {', '.join(unknown)}")
    config = KuaiLiveReplicaConfig(**{k: (int if fields[k] in (int, "int") else float)(v)
                                      for k, v in overrides.items()})
    for key, value in measure_premises(simulate_kuailive_replica(config)).items():
        print(f"{key:24s} {value:.4f}")
