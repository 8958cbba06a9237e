"""Synthetic replica of the Tmall IJCAI-15 "Repeat Buyers" log, written in the official file layout.

`write_tmall_replica(out_dir, config)` writes

- ``user_log_format1.csv``: header ``user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type``;
  action_type 0 click, 1 add-to-cart, 2 purchase, 3 add-to-favourite; ``time_stamp`` is a zero-padded
  MMDD string of 2014 (``0511`` .. ``1112``); ``brand_id`` is empty for ~0.2% of the items;
- ``user_info_format1.csv`` (unless ``write_user_info=False``): ``user_id,age_range,gender`` with
  age_range 0..8 and gender 0 female / 1 male / 2 unknown, both empty for a few users,

so that the project's real-file reader parses the replica exactly like the real download. The quirks
of the real file are reproduced: each user's rows form one contiguous block (blocks in random order),
rows inside a block are NOT chronological (clustered by day, days in random order, rows shuffled
within a day), repeated clicks on the same day produce exact duplicate rows (~20% of rows), raw ids
are random distinct integers of real magnitude (users up to ~424K, items up to ~1.1M, ~1.6K
categories, ~5K sellers, ~8.4K brands) and each item has one fixed cat/seller/brand.

Generative model (everything vectorised with numpy; deterministic for a given config)
------------------------------------------------------------------------------------
Catalogue. Categories have Zipf popularity and belong to one of ``n_category_groups`` groups
("related categories"). Sellers have a home group; an item of category c takes a seller from c's group
(Zipf within the group), and a brand owned by that seller, so items in a category share a
seller/brand structure. Items have Zipf popularity within their category and a latent quality
(partly correlated with popularity).

Users. Each user draws a heavy-tailed (lognormal) number of EPISODES (mean ``episodes_per_user``). An
episode is all of one user's rows on one item; (user, item) pairs are unique. Users like 1-3 category
groups and 2 categories inside each (the gender shifts which groups); ``explore_rate`` of the episodes
fall on a popularity-drawn category outside the tastes. Start days follow a density that grows towards
November, with a pre-sale ramp on 1101..1110 and a spike on 1111 (``double11_share``).

Behavioural STYLE (the planted signal). Every (user, category-group) pair has a hidden style:
``browser`` (mostly clicks), ``impulsive`` (cart + purchase on the start day) or ``deliberate``
(favourite first, cart and purchase days later). A user's style prior is a Dirichlet draw around
``style_mix`` (the age range tilts it: young users more impulsive, older more deliberate); the style of
each group is then drawn independently from that prior, so the user id alone predicts the style only
partly, while the user's history on items of the SAME group (which deeper actions, in which order,
after how many days) reveals it. The style sets

- the probability of each deeper action: ``logit = style_base + quality_weight * item_quality +
  taste_weight * in_taste + user_propensity + episode_engagement (+ double11_boost for cart/purchase
  on 1111)``;
- the ORDER and the DELAYS: actions are visited in a style-specific order (browser/deliberate:
  fav -> cart -> purchase; impulsive: cart -> purchase -> fav); the clock advances by a geometric gap
  (integer days, mostly 0, heavy tail) whose mean depends on the style and the action and is scaled by
  a per-(user, group) lognormal pace factor; an action that happens takes the current clock. Mean
  purchase delay is ~0.2 days for impulsive, ~1.4 for browser and ~2.5 for deliberate episodes; ~60%
  of purchases happen on the start day. Delays are clipped so every event is on or before 1112, which
  keeps the order (purchase never before cart when both happen).

Clicks: the first click is on the start day; 1-4 click rows per episode (more for browsers), extra
clicks fall on the start day (-> exact duplicates) or on the day of the last deeper action (a revisit).
With probability ``no_click_rate`` an episode whose first deeper action is on the start day has no
click at all (real: ~6% of episodes have no click).

Default size: ~60K episodes, ~105K rows (~22% exact duplicates), generated in ~0.2 s. Action mix
(measured per episode at the default size, seeds 0-2; checked in tests/test_tmall_replica.py):
purchase 12-13%, favourite 7.6-8.3%, add-to-cart 3.9-4.2%; ~4% of episodes have no click. NOTE: the real log has far fewer add-to-cart rows (about 0.1%
of the actions; none at all in the 10,000-row public head); the replica RAISES the cart rate on
purpose so that a cart AUC is measurable on a few thousand test episodes.

`simulate_tmall_replica(config)` returns the same tables in memory plus the hidden latents (category
groups, per-episode style), for tests and oracle checks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recbench.data.base import write_csv_folder
from recbench.data.sampling import distinct_ids, first_occurrence, sample_weighted, sample_within, shuffled_zipf
from recbench.records import atomic_folder

LOG_FILE = "user_log_format1.csv"
USER_INFO_FILE = "user_info_format1.csv"
LOG_COLUMNS = ("user_id", "item_id", "cat_id", "seller_id", "brand_id", "time_stamp", "action_type")
USER_INFO_COLUMNS = ("user_id", "age_range", "gender")

FIRST_DAY = np.datetime64("2014-05-11")
N_DAYS = 186  # 0511 .. 1112 inclusive; day index 0 = 0511, 184 = 1111, 185 = 1112
DOUBLE11 = 184
NOV1 = 174

STYLE_NAMES = ("browser", "impulsive", "deliberate")
# Deeper actions, in the column order used by the arrays below: cart, purchase, favourite.
DEEP_ACTION_CODES = (1, 2, 3)
# Probability of each deeper action at zero affinity / propensity / engagement, per style.
_STYLE_PROB = np.array([
    [0.004, 0.008, 0.010],  # browser: mostly clicks
    [0.042, 0.165, 0.018],  # impulsive: cart + purchase
    [0.026, 0.095, 0.170],  # deliberate: favourite, later cart + purchase
])
# Order in which the clock visits the actions (indices into cart/purchase/fav), per style.
_STYLE_ORDER = np.array([
    [2, 0, 1],  # browser: fav -> cart -> purchase
    [0, 1, 2],  # impulsive: cart -> purchase -> fav
    [2, 0, 1],  # deliberate: fav -> cart -> purchase
])
# Mean of the geometric gap (days) that precedes each action (cart, purchase, fav), per style.
_STYLE_GAP_MEAN = np.array([
    [0.5, 0.5, 0.5],   # browser
    [0.06, 0.1, 1.0],  # impulsive: same day
    [1.5, 1.0, 0.2],   # deliberate: fav on day 0, cart ~1.5 days later, purchase ~1 day after that
])
# Number of click rows (1..4) per episode: browsers click more.
_CLICK_PROBS = np.array([
    [0.56, 0.25, 0.11, 0.08],  # browser
    [0.75, 0.15, 0.06, 0.04],  # impulsive
    [0.70, 0.18, 0.08, 0.04],  # deliberate
])
# Real age_range / gender marginals (approximate; 0 = unknown age).
_AGE_PROBS = np.array([0.22, 0.0005, 0.12, 0.27, 0.20, 0.10, 0.07, 0.012, 0.0075])
_GENDER_PROBS = np.array([0.67, 0.25, 0.08])


@dataclass(frozen=True)
class TmallReplicaConfig:
    """Knobs of the Tmall replica. Every field changes the written bytes (hash them for a cache key)."""

    n_users: int = 2000
    n_items: int = 20000
    episodes_per_user: float = 30.0  # mean episodes per user; per-user counts are lognormal (heavy tail)
    seed: int = 0
    episodes_sigma: float = 1.0  # lognormal sigma of the per-user episode count
    n_categories: int = 120  # distinct cat_id (real: ~1.6K)
    n_category_groups: int = 12  # groups of related categories; the style latent is per (user, group)
    n_sellers: int = 500  # distinct seller_id (real: ~5K)
    n_brands: int = 900  # distinct brand_id, >= n_sellers (real: ~8.4K); each brand belongs to one seller
    category_zipf: float = 1.0  # exponent of the Zipf popularity of categories (and category sizes)
    item_zipf: float = 1.0  # exponent of the Zipf popularity of items within their category
    seller_zipf: float = 1.1  # exponent of the Zipf share of sellers within a category group
    explore_rate: float = 0.15  # share of episodes on a category outside the user's tastes
    style_mix: tuple[float, float, float] = (0.45, 0.30, 0.25)  # population share of browser/impulsive/deliberate
    style_concentration: float = 3.0  # Dirichlet concentration of a user's style prior (low = user-wide style)
    pace_sigma: float = 0.5  # lognormal sigma of the per-(user, group) multiplier of the delay means
    quality_weight: float = 0.5  # logit weight of item quality on every deeper action
    taste_weight: float = 0.5  # logit bonus of deeper actions on items of a liked category
    propensity_sigma: float = 0.3  # sd of a per-user logit offset on every deeper action
    engagement_sigma: float = 0.6  # sd of a per-episode logit offset shared by the deeper actions
    growth: float = 1.0  # start-day density grows as exp(growth * t), t from 0 (0511) to 1 (1112)
    november_boost: float = 2.0  # extra density multiplier on the pre-sale days 1101..1110
    double11_share: float = 0.15  # share of episodes starting on 1111
    double11_boost: float = 0.5  # logit bonus of cart and purchase on episodes starting on 1111
    no_click_rate: float = 0.3  # P(no click rows) for an episode whose first deeper action is on day 0
    revisit_rate: float = 0.35  # P(an extra click falls on a later revisit day instead of the start day)
    brand_missing_rate: float = 0.002  # share of items whose brand_id is written empty
    profile_missing_rate: float = 0.01  # share of users with an empty age_range (and, separately, gender)
    max_user_id: int = 424_170  # raw user ids are distinct random ints in 1..max(max_user_id, n_users)
    max_item_id: int = 1_113_102  # raw item id range
    max_cat_id: int = 1_671  # raw cat id range
    max_seller_id: int = 4_995  # raw seller id range
    max_brand_id: int = 8_477  # raw brand id range
    write_user_info: bool = True  # also write user_info_format1.csv

    def __post_init__(self) -> None:
        # Configs arrive from yaml as lists; keep the dataclass hashable and its asdict stable.
        object.__setattr__(self, "style_mix", tuple(float(x) for x in self.style_mix))

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"TmallReplicaConfig: {what}")

        need(self.n_users >= 1, "n_users must be >= 1")
        need(self.n_categories >= 1 and self.n_items >= self.n_categories,
             "need n_items >= n_categories >= 1")
        need(1 <= self.n_category_groups <= self.n_categories,
             "need 1 <= n_category_groups <= n_categories")
        need(self.n_sellers >= self.n_category_groups, "need n_sellers >= n_category_groups")
        need(self.n_brands >= self.n_sellers, "need n_brands >= n_sellers")
        need(self.episodes_per_user >= 1.0, "episodes_per_user must be >= 1")
        need(len(self.style_mix) == 3 and min(self.style_mix) >= 0 and sum(self.style_mix) > 0,
             "style_mix must be 3 non-negative weights")
        for name in ("explore_rate", "double11_share", "no_click_rate", "revisit_rate",
                     "brand_missing_rate", "profile_missing_rate"):
            need(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TmallReplica:
    """In-memory replica: the two files' tables plus the hidden latents."""

    log: pl.DataFrame  # rows exactly as written to user_log_format1.csv
    user_info: pl.DataFrame  # rows exactly as written to user_info_format1.csv
    category_group: dict[int, int]  # raw cat_id -> category group
    episodes: pl.DataFrame  # one row per episode: raw ids, group, style, start day index, has/delay per action


# ----------------------------------------------------------------------------------------- helpers
def _rank_within(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """0-based rank of each element inside its group when sorted by key."""
    order = np.lexsort((key, group))
    g = group[order]
    first = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    seg_start = np.repeat(first, np.diff(np.r_[first, len(g)]))
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(g)) - seg_start
    return rank


def day_to_mmdd(day: np.ndarray) -> np.ndarray:
    """Day index (0 = 2014-05-11) -> int MMDD (e.g. 829 for 2014-08-29)."""
    dates = FIRST_DAY + np.asarray(day).astype("timedelta64[D]")
    months = dates.astype("datetime64[M]")
    month = months.astype(np.int64) % 12 + 1
    dom = (dates - months.astype("datetime64[D]")).astype(np.int64) + 1
    return month * 100 + dom


def _start_day_weights(config: TmallReplicaConfig) -> np.ndarray:
    t = np.arange(N_DAYS) / (N_DAYS - 1)
    w = np.exp(config.growth * t)
    w[NOV1:DOUBLE11] *= config.november_boost
    w[DOUBLE11] = 0.0
    w *= (1.0 - config.double11_share) / w.sum()
    w[DOUBLE11] = config.double11_share
    return w


# ------------------------------------------------------------------------------------ phase state
# Each phase of the simulation returns one of these small records; the next phases read them.
# Index arrays hold 0-based internal indices (category, item, user, episode); raw ids are drawn last.


@dataclass(frozen=True)
class _Streams:
    """One independent random generator per phase."""

    cat: np.random.Generator
    user: np.random.Generator
    ep: np.random.Generator
    act: np.random.Generator
    row: np.random.Generator
    id: np.random.Generator


@dataclass(frozen=True)
class _Catalogue:
    """Categories and items with their fixed seller/brand and latent popularity/quality."""

    cat_pop: np.ndarray  # (n_c,) Zipf popularity of each category
    cat_group: np.ndarray  # (n_c,) category group of each category
    item_cat: np.ndarray  # (n_i,) category of each item
    item_pop: np.ndarray  # (n_i,) Zipf popularity of each item within its category
    quality: np.ndarray  # (n_i,) standardised latent quality
    item_seller: np.ndarray  # (n_i,) seller index
    item_brand: np.ndarray  # (n_i,) brand index (a brand of the item's seller)
    brand_missing: np.ndarray  # (n_i,) bool: brand_id written empty


@dataclass(frozen=True)
class _Users:
    """Users' public profile and their liked categories."""

    age: np.ndarray  # (n_u,) age_range 0..8
    gender: np.ndarray  # (n_u,) 0 female / 1 male / 2 unknown
    age_missing: np.ndarray  # (n_u,) bool: age_range written empty
    gender_missing: np.ndarray  # (n_u,) bool: gender written empty
    slot_cat: np.ndarray  # (n_u, 6) liked categories: 2 slots per liked group
    slot_cdf: np.ndarray  # (n_u, 6) cumulative slot weights (zero weight on unused slots)


@dataclass(frozen=True)
class _UserStyles:
    """Hidden behaviour of the users: style and pace per (user, group), propensity per user."""

    style: np.ndarray  # (n_u, n_g) index into STYLE_NAMES
    pace: np.ndarray  # (n_u, n_g) multiplier of the delay means
    propensity: np.ndarray  # (n_u,) logit offset of every deeper action


@dataclass(frozen=True)
class _Episodes:
    """One entry per episode (all of one user's rows on one item); (user, item) pairs are unique."""

    user: np.ndarray
    cat: np.ndarray
    item: np.ndarray
    explore: np.ndarray  # bool: category drawn outside the user's tastes
    start: np.ndarray  # start day index
    group: np.ndarray
    style: np.ndarray


@dataclass(frozen=True)
class _DeepActions:
    """Per episode and deeper action (columns cart, purchase, favourite): whether and when it happens."""

    has: np.ndarray  # (E, 3) bool
    delay: np.ndarray  # (E, 3) days after the start day; 0 where the action does not happen


@dataclass(frozen=True)
class _Clicks:
    """One entry per click row."""

    ep: np.ndarray  # episode index
    delay: np.ndarray  # days after the episode's start day


@dataclass(frozen=True)
class _Rows:
    """One entry per log row, in internal indices."""

    ep: np.ndarray
    user: np.ndarray
    day: np.ndarray
    action: np.ndarray  # action_type code


@dataclass(frozen=True)
class _RawIds:
    """Raw ids written to the files, indexed by the internal index of the entity."""

    user: np.ndarray
    item: np.ndarray
    cat: np.ndarray
    seller: np.ndarray
    brand: np.ndarray


# -------------------------------------------------------------------------------------- simulation
def simulate_tmall_replica(config: TmallReplicaConfig) -> TmallReplica:
    """Generate the replica tables in memory (deterministic for a given config)."""
    config.validate()
    rng = _spawn_streams(config.seed)
    # The phases run in this order; each draws only from its own stream(s), and the two phases that
    # share `rng.act` (deeper actions, then clicks) must keep that order.
    catalogue = _build_catalogue(rng.cat, config)
    users = _build_users(rng.user, config, catalogue)
    styles = _build_user_styles(rng.user, config, users.age)
    episodes = _build_episodes(rng.ep, config, catalogue, users, styles)
    actions = _draw_deep_actions(rng.act, config, catalogue, styles, episodes)
    clicks = _draw_clicks(rng.act, config, episodes, actions)
    rows = _shuffle_rows(rng.row, config.n_users, _assemble_rows(episodes, actions, clicks))
    ids = _draw_raw_ids(rng.id, config)
    return TmallReplica(log=_log_table(rows, episodes, catalogue, ids),
                        user_info=_user_info_table(users, ids),
                        category_group={int(c): int(g) for c, g in zip(ids.cat, catalogue.cat_group)},
                        episodes=_episode_table(episodes, actions, ids))


def _spawn_streams(seed: int) -> _Streams:
    """Build the six per-phase random generators from the seed."""
    # Separate streams keep a phase's draws unaffected by how many draws the other phases make.
    streams = np.random.SeedSequence([seed, 0x7A11]).spawn(6)
    return _Streams(*(np.random.default_rng(s) for s in streams))


def _build_catalogue(rng: np.random.Generator, config: TmallReplicaConfig) -> _Catalogue:
    """Build the catalogue: categories -> groups, sellers, brands, items."""
    n_c, n_g, n_i = config.n_categories, config.n_category_groups, config.n_items
    n_s = config.n_sellers
    cat_pop = shuffled_zipf(rng, n_c, config.category_zipf)
    # The leading arange guarantees every group owns at least one category (and one seller below),
    # which sample_within requires.
    cat_group = np.r_[np.arange(n_g), rng.integers(0, n_g, n_c - n_g)][rng.permutation(n_c)]
    seller_group = np.r_[np.arange(n_g), rng.integers(0, n_g, n_s - n_g)]
    seller_group = seller_group[rng.permutation(n_s)]
    seller_w = shuffled_zipf(rng, n_s, config.seller_zipf)
    # Every seller owns at least one brand; big sellers own more of the extra brands.
    brand_seller = np.r_[np.arange(n_s), sample_weighted(seller_w, rng.random(config.n_brands - n_s))]
    brand_w = rng.exponential(1.0, config.n_brands) + 0.05
    # Every category gets at least one item; the rest follow category popularity.
    item_cat = np.r_[np.arange(n_c), sample_weighted(cat_pop, rng.random(n_i - n_c))]
    item_cat = item_cat[rng.permutation(n_i)]
    item_rank = _rank_within(item_cat, rng.random(n_i))
    item_pop = 1.0 / (item_rank + 1.0) ** config.item_zipf
    # Quality is partly correlated with popularity (popular items are a bit better).
    quality = 0.5 * (-np.log1p(item_rank)) + rng.normal(0.0, 1.0, n_i)
    quality = (quality - quality.mean()) / quality.std()
    # Items of a category share the seller/brand structure of the category's group.
    item_seller = sample_within(rng, seller_w, seller_group, n_g, cat_group[item_cat])
    item_brand = sample_within(rng, brand_w, brand_seller, n_s, item_seller)
    brand_missing = rng.random(n_i) < config.brand_missing_rate
    return _Catalogue(cat_pop=cat_pop, cat_group=cat_group, item_cat=item_cat, item_pop=item_pop,
                      quality=quality, item_seller=item_seller, item_brand=item_brand,
                      brand_missing=brand_missing)


def _build_users(rng: np.random.Generator, config: TmallReplicaConfig, catalogue: _Catalogue) -> _Users:
    """Build the users' profiles (age, gender) and tastes (liked groups and categories)."""
    n_u, n_g = config.n_users, config.n_category_groups
    age = rng.choice(len(_AGE_PROBS), size=n_u, p=_AGE_PROBS / _AGE_PROBS.sum())
    gender = rng.choice(3, size=n_u, p=_GENDER_PROBS)
    age_missing = rng.random(n_u) < config.profile_missing_rate
    gender_missing = rng.random(n_u) < config.profile_missing_rate

    # Liked groups: popular groups are liked more often, and the gender shifts which groups.
    group_pop = np.bincount(catalogue.cat_group, weights=catalogue.cat_pop, minlength=n_g)
    tilt = np.exp(0.6 * rng.normal(size=(2, n_g)))  # female / male group preference
    gender_pref = np.vstack([group_pop * tilt[0], group_pop * tilt[1], group_pop])  # 2 = unknown
    # Gumbel top-k: sorting log-weight + Gumbel noise draws groups without replacement.
    keys = np.log(gender_pref[gender]) + rng.gumbel(size=(n_u, n_g))
    top_groups = np.argsort(-keys, axis=1, kind="stable")[:, :3]  # up to 3 liked groups, without replacement
    n_liked = rng.choice(3, size=n_u, p=[0.35, 0.45, 0.20]) + 1
    slot_group = np.repeat(top_groups, 2, axis=1)  # 2 categories per liked group -> 6 slots
    slot_cat = sample_within(rng, catalogue.cat_pop, catalogue.cat_group, n_g,
                             slot_group.ravel()).reshape(n_u, 6)
    # Slots of the groups beyond the user's n_liked get zero weight, so they are never drawn.
    slot_w = rng.exponential(1.0, (n_u, 6)) * (np.repeat(np.arange(3), 2)[None, :] < n_liked[:, None])
    return _Users(age=age, gender=gender, age_missing=age_missing, gender_missing=gender_missing,
                  slot_cat=slot_cat, slot_cdf=np.cumsum(slot_w, axis=1))


def _build_user_styles(rng: np.random.Generator, config: TmallReplicaConfig, age: np.ndarray) -> _UserStyles:
    """Build the hidden style and pace of every (user, group) and each user's propensity."""
    n_u, n_g = config.n_users, config.n_category_groups
    mix = np.asarray(config.style_mix, dtype=np.float64)
    mix = mix / mix.sum()
    prior = np.tile(mix, (n_u, 1))
    prior[np.isin(age, (1, 2)), 1] *= 1.5  # young: more impulsive
    prior[age >= 6, 2] *= 1.4  # older: more deliberate
    prior = prior / prior.sum(axis=1, keepdims=True)
    # Dirichlet draw (normalised gammas) around the prior: the user id predicts the style only partly.
    user_style_p = rng.gamma(config.style_concentration * prior + 1e-3)
    user_style_p /= user_style_p.sum(axis=1, keepdims=True)
    cum_style = np.cumsum(user_style_p, axis=1)
    # Each group's style is drawn independently from the user's prior: the history on the SAME group
    # is what reveals it.
    style = (rng.random((n_u, n_g))[:, :, None] > cum_style[:, None, :2]).sum(axis=2)
    pace = np.exp(rng.normal(0.0, config.pace_sigma, (n_u, n_g)))
    propensity = rng.normal(0.0, config.propensity_sigma, n_u)
    return _UserStyles(style=style, pace=pace, propensity=propensity)


def _build_episodes(rng: np.random.Generator, config: TmallReplicaConfig, catalogue: _Catalogue,
                    users: _Users, styles: _UserStyles) -> _Episodes:
    """Build the episodes: counts per user, categories, items (unique per user), start days."""
    n_u, n_i, n_c = config.n_users, config.n_items, config.n_categories
    # Lognormal counts with mean episodes_per_user (mu corrects for the lognormal mean), capped so a
    # user can still find that many distinct items.
    sigma = config.episodes_sigma
    mu = np.log(config.episodes_per_user) - 0.5 * sigma**2
    n_eps = np.maximum(1, np.rint(rng.lognormal(mu, sigma, n_u))).astype(np.int64)
    n_eps = np.minimum(n_eps, max(1, n_i // 4))
    ep_user = np.repeat(np.arange(n_u), n_eps)
    n_e = len(ep_user)
    explore = rng.random(n_e) < config.explore_rate
    slot = (rng.random(n_e)[:, None] * users.slot_cdf[ep_user, -1:] >= users.slot_cdf[ep_user]).sum(axis=1)
    ep_cat = np.where(explore, sample_weighted(catalogue.cat_pop, rng.random(n_e)),
                      users.slot_cat[ep_user, np.minimum(slot, 5)])
    ep_item = sample_within(rng, catalogue.item_pop, catalogue.item_cat, n_c, ep_cat)
    for _ in range(8):  # redraw items a user already has an episode on (same category)
        dup = ~first_occurrence(ep_user * n_i + ep_item)
        if not dup.any():
            break
        ep_item[dup] = sample_within(rng, catalogue.item_pop, catalogue.item_cat, n_c, ep_cat[dup])
    # Duplicates that survive the redraws are dropped, so (user, item) pairs are unique.
    keep = first_occurrence(ep_user * n_i + ep_item)
    ep_user, ep_cat, ep_item, explore = ep_user[keep], ep_cat[keep], ep_item[keep], explore[keep]
    ep_start = sample_weighted(_start_day_weights(config), rng.random(len(ep_user)))
    ep_group = catalogue.cat_group[ep_cat]
    return _Episodes(user=ep_user, cat=ep_cat, item=ep_item, explore=explore, start=ep_start,
                     group=ep_group, style=styles.style[ep_user, ep_group])


def _draw_deep_actions(rng: np.random.Generator, config: TmallReplicaConfig, catalogue: _Catalogue,
                       styles: _UserStyles, episodes: _Episodes) -> _DeepActions:
    """Draw which deeper actions happen (style + affinity), in which order, after how many days."""
    n_e = len(episodes.user)
    base = np.log(_STYLE_PROB / (1.0 - _STYLE_PROB))[episodes.style]  # (E, 3)
    # The taste term is centred on the population share of in-taste episodes, so it shifts in-taste vs
    # explore episodes without moving the overall action rates.
    shift = (config.quality_weight * catalogue.quality[episodes.item]
             + config.taste_weight * ((~episodes.explore) - (1.0 - config.explore_rate))
             + styles.propensity[episodes.user]
             + rng.normal(0.0, config.engagement_sigma, n_e))
    logit = base + shift[:, None]
    logit[episodes.start == DOUBLE11, :2] += config.double11_boost  # cart and purchase only
    has = rng.random((n_e, 3)) < 1.0 / (1.0 + np.exp(-logit))
    # The clock visits the actions in the style's order and only moves forward, so the delays keep
    # that order; every action gets a time, whether it happens or not (zeroed below).
    delay = np.zeros((n_e, 3), dtype=np.int64)
    clock = np.zeros(n_e, dtype=np.int64)
    pace = styles.pace[episodes.user, episodes.group]
    rows = np.arange(n_e)
    for pos in range(3):
        act = _STYLE_ORDER[episodes.style, pos]
        mean = _STYLE_GAP_MEAN[episodes.style, act] * pace
        clock = clock + rng.geometric(1.0 / (1.0 + mean)) - 1  # geometric gap >= 0 with this mean
        delay[rows, act] = clock
    # Clipping to 1112 is monotone, so it keeps the order (purchase never before cart).
    delay = np.minimum(delay, (N_DAYS - 1 - episodes.start)[:, None]) * has
    return _DeepActions(has=has, delay=delay)


def _draw_clicks(rng: np.random.Generator, config: TmallReplicaConfig, episodes: _Episodes,
                 actions: _DeepActions) -> _Clicks:
    """Draw the click rows: 1..4 per episode, first on the start day, extras duplicate it or revisit."""
    n_e = len(episodes.user)
    has, delay = actions.has, actions.delay
    any_deep = has.any(axis=1)
    first_deep = np.where(has, delay, N_DAYS).min(axis=1)
    last_deep = np.where(has, delay, -1).max(axis=1)
    cprobs = np.cumsum(_CLICK_PROBS, axis=1)[episodes.style]
    n_clicks = (rng.random(n_e)[:, None] >= cprobs[:, :3]).sum(axis=1) + 1
    # Like the real log, some episodes have no click: only those with a deeper action on the start day.
    no_click = any_deep & (first_deep == 0) & (rng.random(n_e) < config.no_click_rate)
    n_clicks[no_click] = 0
    c_ep = np.repeat(np.arange(n_e), n_clicks)
    c_rank = _rank_within(c_ep, np.zeros(len(c_ep)))  # 0 for the first click of each episode
    # A revisit falls on the day of the last deeper action, or a few days after the start when there is none.
    revisit_days = np.where(any_deep, last_deep,
                            np.minimum(rng.geometric(0.4, n_e), N_DAYS - 1 - episodes.start))[c_ep]
    # The first click is always on the start day; an extra one that does not revisit repeats the start
    # day and so produces an exact duplicate row.
    revisit = (c_rank > 0) & (rng.random(len(c_ep)) < config.revisit_rate)
    return _Clicks(ep=c_ep, delay=np.where(revisit, revisit_days, 0))


def _assemble_rows(episodes: _Episodes, actions: _DeepActions, clicks: _Clicks) -> _Rows:
    """Assemble the log rows: the clicks, then the cart, purchase and favourite rows."""
    r_ep = [clicks.ep]
    r_delay = [clicks.delay]
    r_action = [np.zeros(len(clicks.ep), dtype=np.int64)]
    for k, code in enumerate(DEEP_ACTION_CODES):
        idx = np.flatnonzero(actions.has[:, k])
        r_ep.append(idx)
        r_delay.append(actions.delay[idx, k])
        r_action.append(np.full(len(idx), code, dtype=np.int64))
    ep, delay, action = np.concatenate(r_ep), np.concatenate(r_delay), np.concatenate(r_action)
    return _Rows(ep=ep, user=episodes.user[ep], day=episodes.start[ep] + delay, action=action)


def _dense_rank(values: np.ndarray) -> np.ndarray:
    """0-based rank of each value among the distinct values (equal values share a rank)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.empty(len(values), dtype=bool)
    new[:1] = True
    new[1:] = ordered[1:] != ordered[:-1]
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    return rank


def _shuffle_rows(rng: np.random.Generator, n_users: int, rows: _Rows) -> _Rows:
    """Reorder the rows like the real file: random user blocks, random days in a block, rows shuffled."""
    block_rank = rng.permutation(n_users)
    user_day = rows.user * N_DAYS + rows.day
    group_keys, inv = np.unique(user_day, return_inverse=True)
    day_key = rng.random(inv.max() + 1)  # one random key per (user, day)
    tie = rng.random(len(rows.ep))  # a per-row tie-breaker
    # the order of a stable lexsort by (block, day key, tie-breaker), as one int64 sort key
    # (np.lexsort over float keys takes ~4 s per million rows)
    n_groups = len(group_keys)
    group_rank = _dense_rank(block_rank[group_keys // N_DAYS].astype(np.int64) * n_groups + _dense_rank(day_key))
    order = np.argsort(group_rank[inv] * len(tie) + _dense_rank(tie), kind="stable")
    return _Rows(ep=rows.ep[order], user=rows.user[order], day=rows.day[order], action=rows.action[order])


def _draw_raw_ids(rng: np.random.Generator, config: TmallReplicaConfig) -> _RawIds:
    """Draw distinct raw ids of realistic magnitude for users, items, categories, sellers, brands."""
    def ids(n: int, max_id: int) -> np.ndarray:  # n distinct ints in 1..max(max_id, n), in random order
        return distinct_ids(rng, n, 1, max(max_id, n) + 1)

    return _RawIds(
        user=ids(config.n_users, config.max_user_id),
        item=ids(config.n_items, config.max_item_id),
        cat=ids(config.n_categories, config.max_cat_id),
        seller=ids(config.n_sellers, config.max_seller_id),
        brand=ids(config.n_brands, config.max_brand_id),
    )


def _log_table(rows: _Rows, episodes: _Episodes, catalogue: _Catalogue, ids: _RawIds) -> pl.DataFrame:
    """Build the user_log_format1 table from the ordered rows."""
    r_item = episodes.item[rows.ep]
    return pl.DataFrame({
        "user_id": ids.user[rows.user],
        "item_id": ids.item[r_item],
        "cat_id": ids.cat[catalogue.item_cat[r_item]],
        "seller_id": ids.seller[catalogue.item_seller[r_item]],
        "brand_id": pl.Series("brand_id", ids.brand[catalogue.item_brand[r_item]], dtype=pl.Int64),
        "time_stamp": day_to_mmdd(rows.day),
        "action_type": rows.action,
        "_brand_missing": catalogue.brand_missing[r_item],
    }).with_columns(
        pl.when(pl.col("_brand_missing")).then(None).otherwise(pl.col("brand_id")).alias("brand_id"),
        # The real file writes MMDD with a leading zero (0511), so keep it a zero-padded string.
        pl.col("time_stamp").cast(pl.String).str.zfill(4),
    ).select(LOG_COLUMNS)


def _user_info_table(users: _Users, ids: _RawIds) -> pl.DataFrame:
    """Build the user_info_format1 table, sorted by raw user id."""
    return pl.DataFrame({
        "user_id": ids.user,
        "age_range": pl.Series(np.where(users.age_missing, 0, users.age)).cast(pl.Int64),
        "gender": pl.Series(users.gender).cast(pl.Int64),
        "_am": users.age_missing, "_gm": users.gender_missing,
    }).with_columns(
        pl.when(pl.col("_am")).then(None).otherwise(pl.col("age_range")).alias("age_range"),
        pl.when(pl.col("_gm")).then(None).otherwise(pl.col("gender")).alias("gender"),
    ).select(USER_INFO_COLUMNS).sort("user_id")


def _episode_table(episodes: _Episodes, actions: _DeepActions, ids: _RawIds) -> pl.DataFrame:
    """Build the hidden per-episode table (raw ids, group, style, start day, has/delay per action)."""
    has, delay = actions.has, actions.delay
    return pl.DataFrame({
        "user_id": ids.user[episodes.user], "item_id": ids.item[episodes.item],
        "cat_id": ids.cat[episodes.cat],
        "group": episodes.group, "style": episodes.style, "explore": episodes.explore,
        "start_day": episodes.start,
        "has_cart": has[:, 0], "has_purchase": has[:, 1], "has_fav": has[:, 2],
        "delay_cart": delay[:, 0], "delay_purchase": delay[:, 1], "delay_fav": delay[:, 2],
    })


# ------------------------------------------------------------------------------------------ writing
def write_tmall_replica(out_dir: Path, config: TmallReplicaConfig, users_per_block: int = 25_000,
                        progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write the replica files into `out_dir` atomically; return their final paths.

    Output is byte-for-byte deterministic for a given config. Populations larger than
    `users_per_block` are simulated and written block by block (peak memory ~ one block: ~1 GiB
    instead of ~0.3 GiB per million rows, which matters at the real log's 54.9M rows): the
    catalogue and raw ids are drawn once, each block of users draws from its own seeded streams
    (block 0 from the standard ones, so a population that fits in one block gives the same bytes
    either way). Users' rows stay contiguous. `progress` gets one line per block."""
    if config.n_users <= users_per_block:
        replica = simulate_tmall_replica(config)
        tables = {LOG_FILE: replica.log} | ({USER_INFO_FILE: replica.user_info} if config.write_user_info else {})
        return write_csv_folder(Path(out_dir), tables)
    return _write_blocked(Path(out_dir), config, users_per_block, progress)


def _block_streams(seed: int, block: int) -> _Streams:
    if block == 0:
        return _spawn_streams(seed)
    streams = np.random.SeedSequence([seed, 0x7A11, block]).spawn(6)
    return _Streams(*(np.random.default_rng(s) for s in streams))


def _write_blocked(out_dir: Path, config: TmallReplicaConfig, users_per_block: int,
                   progress: Callable[[str], None] | None) -> list[Path]:
    config.validate()
    names = [LOG_FILE] + ([USER_INFO_FILE] if config.write_user_info else [])
    started, rows_written, infos = time.perf_counter(), 0, []
    base = _spawn_streams(config.seed)
    catalogue = _build_catalogue(base.cat, config)
    ids = _draw_raw_ids(base.id, config)
    with atomic_folder(out_dir) as tmp, open(tmp / LOG_FILE, "wb") as handle:
        for block, start in enumerate(range(0, config.n_users, users_per_block)):
            n = min(users_per_block, config.n_users - start)
            rng, part = _block_streams(config.seed, block), dataclasses.replace(config, n_users=n)
            users = _build_users(rng.user, part, catalogue)
            styles = _build_user_styles(rng.user, part, users.age)
            episodes = _build_episodes(rng.ep, part, catalogue, users, styles)
            actions = _draw_deep_actions(rng.act, part, catalogue, styles, episodes)
            clicks = _draw_clicks(rng.act, part, episodes, actions)
            rows = _shuffle_rows(rng.row, n, _assemble_rows(episodes, actions, clicks))
            block_ids = dataclasses.replace(ids, user=ids.user[start:start + n])
            table = _log_table(rows, episodes, catalogue, block_ids)
            table.write_csv(handle, include_header=block == 0)
            rows_written += table.height
            if config.write_user_info:
                infos.append(_user_info_table(users, block_ids))
            if progress:
                progress(f"replica: users {start + n:,}/{config.n_users:,}, rows {rows_written:,}, "
                         f"{time.perf_counter() - started:.0f} s")
        if config.write_user_info:
            pl.concat(infos).sort("user_id").write_csv(tmp / USER_INFO_FILE)
    return [out_dir / name for name in names]
