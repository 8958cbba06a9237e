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
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

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
def _zipf(n: int, exponent: float) -> np.ndarray:
    return 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from an (unnormalised) cumulative weight array with uniforms u in [0, 1)."""
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def _sample_within(rng: np.random.Generator, weights: np.ndarray, owner: np.ndarray, n_owners: int,
                   want: np.ndarray) -> np.ndarray:
    """For each entry of `want` (an owner index), draw a member of that owner by `weights`.

    Members are sorted by owner once; a draw is a searchsorted into the global cumulative weights
    restricted to the owner's slice. Every owner in `want` must have at least one member."""
    order = np.argsort(owner, kind="stable")
    cum = np.cumsum(weights[order])
    start = np.searchsorted(owner[order], np.arange(n_owners), side="left")
    stop = np.searchsorted(owner[order], np.arange(n_owners), side="right")
    lo = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    hi = cum[np.maximum(stop - 1, 0)]
    target = lo[want] + rng.random(len(want)) * (hi[want] - lo[want])
    pos = np.searchsorted(cum, target, side="right")
    pos = np.clip(pos, start[want], stop[want] - 1)
    return order[pos]


def _distinct_ids(rng: np.random.Generator, n: int, max_id: int) -> np.ndarray:
    """n distinct random ints in 1..max(max_id, n), in random order."""
    return rng.choice(max(max_id, n), size=n, replace=False).astype(np.int64) + 1


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


# -------------------------------------------------------------------------------------- simulation
def simulate_tmall_replica(config: TmallReplicaConfig) -> TmallReplica:
    """Generate the replica tables in memory (deterministic for a given config)."""
    config.validate()
    streams = np.random.SeedSequence([config.seed, 0x7A11]).spawn(6)
    rng_cat, rng_user, rng_ep, rng_act, rng_row, rng_id = (np.random.default_rng(s) for s in streams)
    n_c, n_g, n_i, n_u = config.n_categories, config.n_category_groups, config.n_items, config.n_users

    # ---- catalogue: categories -> groups, sellers, brands, items
    cat_pop = _zipf(n_c, config.category_zipf)[rng_cat.permutation(n_c)]
    cat_group = np.r_[np.arange(n_g), rng_cat.integers(0, n_g, n_c - n_g)][rng_cat.permutation(n_c)]
    seller_group = np.r_[np.arange(n_g), rng_cat.integers(0, n_g, config.n_sellers - n_g)]
    seller_group = seller_group[rng_cat.permutation(config.n_sellers)]
    seller_w = _zipf(config.n_sellers, config.seller_zipf)[rng_cat.permutation(config.n_sellers)]
    brand_seller = np.r_[np.arange(config.n_sellers),
                         _sample_cdf(np.cumsum(seller_w), rng_cat.random(config.n_brands - config.n_sellers))]
    brand_w = rng_cat.exponential(1.0, config.n_brands) + 0.05
    item_cat = np.r_[np.arange(n_c), _sample_cdf(np.cumsum(cat_pop), rng_cat.random(n_i - n_c))]
    item_cat = item_cat[rng_cat.permutation(n_i)]
    item_rank = _rank_within(item_cat, rng_cat.random(n_i))
    item_pop = 1.0 / (item_rank + 1.0) ** config.item_zipf
    quality = 0.5 * (-np.log1p(item_rank)) + rng_cat.normal(0.0, 1.0, n_i)
    quality = (quality - quality.mean()) / quality.std()
    item_seller = _sample_within(rng_cat, seller_w, seller_group, n_g, cat_group[item_cat])
    item_brand = _sample_within(rng_cat, brand_w, brand_seller, config.n_sellers, item_seller)
    brand_missing = rng_cat.random(n_i) < config.brand_missing_rate

    # ---- users: profile, tastes, per-(user, group) style and pace
    age = rng_user.choice(len(_AGE_PROBS), size=n_u, p=_AGE_PROBS / _AGE_PROBS.sum())
    gender = rng_user.choice(3, size=n_u, p=_GENDER_PROBS)
    age_missing = rng_user.random(n_u) < config.profile_missing_rate
    gender_missing = rng_user.random(n_u) < config.profile_missing_rate

    group_pop = np.bincount(cat_group, weights=cat_pop, minlength=n_g)
    tilt = np.exp(0.6 * rng_user.normal(size=(2, n_g)))  # female / male group preference
    gender_pref = np.vstack([group_pop * tilt[0], group_pop * tilt[1], group_pop])  # 2 = unknown
    keys = np.log(gender_pref[gender]) + rng_user.gumbel(size=(n_u, n_g))
    top_groups = np.argsort(-keys, axis=1, kind="stable")[:, :3]  # up to 3 liked groups, without replacement
    n_liked = rng_user.choice(3, size=n_u, p=[0.35, 0.45, 0.20]) + 1
    slot_group = np.repeat(top_groups, 2, axis=1)  # 2 categories per liked group -> 6 slots
    slot_cat = _sample_within(rng_user, cat_pop, cat_group, n_g, slot_group.ravel()).reshape(n_u, 6)
    slot_w = rng_user.exponential(1.0, (n_u, 6)) * (np.repeat(np.arange(3), 2)[None, :] < n_liked[:, None])
    slot_cdf = np.cumsum(slot_w, axis=1)

    mix = np.asarray(config.style_mix, dtype=np.float64)
    mix = mix / mix.sum()
    prior = np.tile(mix, (n_u, 1))
    prior[np.isin(age, (1, 2)), 1] *= 1.5  # young: more impulsive
    prior[age >= 6, 2] *= 1.4  # older: more deliberate
    prior = prior / prior.sum(axis=1, keepdims=True)
    user_style_p = rng_user.gamma(config.style_concentration * prior + 1e-3)
    user_style_p /= user_style_p.sum(axis=1, keepdims=True)
    cum_style = np.cumsum(user_style_p, axis=1)
    style_ug = (rng_user.random((n_u, n_g))[:, :, None] > cum_style[:, None, :2]).sum(axis=2)
    pace_ug = np.exp(rng_user.normal(0.0, config.pace_sigma, (n_u, n_g)))
    propensity = rng_user.normal(0.0, config.propensity_sigma, n_u)

    # ---- episodes: counts, categories, items (unique per user), start days
    sigma = config.episodes_sigma
    mu = np.log(config.episodes_per_user) - 0.5 * sigma**2
    n_eps = np.maximum(1, np.rint(rng_ep.lognormal(mu, sigma, n_u))).astype(np.int64)
    n_eps = np.minimum(n_eps, max(1, n_i // 4))
    ep_user = np.repeat(np.arange(n_u), n_eps)
    n_e = len(ep_user)
    explore = rng_ep.random(n_e) < config.explore_rate
    slot = (rng_ep.random(n_e)[:, None] * slot_cdf[ep_user, -1:] >= slot_cdf[ep_user]).sum(axis=1)
    ep_cat = np.where(explore, _sample_cdf(np.cumsum(cat_pop), rng_ep.random(n_e)),
                      slot_cat[ep_user, np.minimum(slot, 5)])
    ep_item = _sample_within(rng_ep, item_pop, item_cat, n_c, ep_cat)
    for _ in range(8):  # redraw items a user already has an episode on (same category)
        dup = _duplicated(ep_user * n_i + ep_item)
        if not dup.any():
            break
        ep_item[dup] = _sample_within(rng_ep, item_pop, item_cat, n_c, ep_cat[dup])
    keep = ~_duplicated(ep_user * n_i + ep_item)
    ep_user, ep_cat, ep_item, explore = ep_user[keep], ep_cat[keep], ep_item[keep], explore[keep]
    n_e = len(ep_user)
    ep_start = _sample_cdf(np.cumsum(_start_day_weights(config)), rng_ep.random(n_e))
    ep_group = cat_group[ep_cat]
    ep_style = style_ug[ep_user, ep_group]

    # ---- deeper actions: which happen (style + affinity), in which order, after how many days
    base = np.log(_STYLE_PROB / (1.0 - _STYLE_PROB))[ep_style]  # (E, 3)
    shift = (config.quality_weight * quality[ep_item]
             + config.taste_weight * ((~explore) - (1.0 - config.explore_rate))
             + propensity[ep_user]
             + rng_act.normal(0.0, config.engagement_sigma, n_e))
    logit = base + shift[:, None]
    logit[ep_start == DOUBLE11, :2] += config.double11_boost
    has = rng_act.random((n_e, 3)) < 1.0 / (1.0 + np.exp(-logit))
    delay = np.zeros((n_e, 3), dtype=np.int64)
    clock = np.zeros(n_e, dtype=np.int64)
    pace = pace_ug[ep_user, ep_group]
    rows = np.arange(n_e)
    for pos in range(3):
        act = _STYLE_ORDER[ep_style, pos]
        mean = _STYLE_GAP_MEAN[ep_style, act] * pace
        clock = clock + rng_act.geometric(1.0 / (1.0 + mean)) - 1
        delay[rows, act] = clock
    delay = np.minimum(delay, (N_DAYS - 1 - ep_start)[:, None]) * has
    any_deep = has.any(axis=1)
    first_deep = np.where(has, delay, N_DAYS).min(axis=1)
    last_deep = np.where(has, delay, -1).max(axis=1)

    # ---- click rows: 1..4 per episode, first on the start day, extras duplicate it or revisit
    cprobs = np.cumsum(_CLICK_PROBS, axis=1)[ep_style]
    n_clicks = (rng_act.random(n_e)[:, None] >= cprobs[:, :3]).sum(axis=1) + 1
    no_click = any_deep & (first_deep == 0) & (rng_act.random(n_e) < config.no_click_rate)
    n_clicks[no_click] = 0
    c_ep = np.repeat(rows, n_clicks)
    c_rank = _rank_within(c_ep, np.zeros(len(c_ep)))
    revisit_days = np.where(any_deep, last_deep,
                            np.minimum(rng_act.geometric(0.4, n_e), N_DAYS - 1 - ep_start))[c_ep]
    revisit = (c_rank > 0) & (rng_act.random(len(c_ep)) < config.revisit_rate)
    c_delay = np.where(revisit, revisit_days, 0)

    r_ep = [c_ep]
    r_delay = [c_delay]
    r_action = [np.zeros(len(c_ep), dtype=np.int64)]
    for k, code in enumerate(DEEP_ACTION_CODES):
        idx = np.flatnonzero(has[:, k])
        r_ep.append(idx)
        r_delay.append(delay[idx, k])
        r_action.append(np.full(len(idx), code, dtype=np.int64))
    r_ep, r_delay, r_action = np.concatenate(r_ep), np.concatenate(r_delay), np.concatenate(r_action)
    r_user = ep_user[r_ep]
    r_day = ep_start[r_ep] + r_delay

    # ---- row order: user blocks in random order; inside a block, days in random order, rows shuffled
    block_rank = rng_row.permutation(n_u)
    user_day = r_user * N_DAYS + r_day
    _, inv = np.unique(user_day, return_inverse=True)
    day_key = rng_row.random(inv.max() + 1)[inv]
    order = np.lexsort((rng_row.random(len(r_ep)), day_key, block_rank[r_user]))
    r_ep, r_day, r_action, r_user = r_ep[order], r_day[order], r_action[order], r_user[order]

    # ---- raw ids of realistic magnitude
    uid = _distinct_ids(rng_id, n_u, config.max_user_id)
    iid = _distinct_ids(rng_id, n_i, config.max_item_id)
    cid = _distinct_ids(rng_id, n_c, config.max_cat_id)
    sid = _distinct_ids(rng_id, config.n_sellers, config.max_seller_id)
    bid = _distinct_ids(rng_id, config.n_brands, config.max_brand_id)
    r_item = ep_item[r_ep]
    log = pl.DataFrame({
        "user_id": uid[r_user],
        "item_id": iid[r_item],
        "cat_id": cid[item_cat[r_item]],
        "seller_id": sid[item_seller[r_item]],
        "brand_id": pl.Series("brand_id", bid[item_brand[r_item]], dtype=pl.Int64),
        "time_stamp": day_to_mmdd(r_day),
        "action_type": r_action,
        "_brand_missing": brand_missing[r_item],
    }).with_columns(
        pl.when(pl.col("_brand_missing")).then(None).otherwise(pl.col("brand_id")).alias("brand_id"),
        pl.col("time_stamp").cast(pl.String).str.zfill(4),
    ).select(LOG_COLUMNS)

    user_info = pl.DataFrame({
        "user_id": uid,
        "age_range": pl.Series(np.where(age_missing, 0, age)).cast(pl.Int64),
        "gender": pl.Series(gender).cast(pl.Int64),
        "_am": age_missing, "_gm": gender_missing,
    }).with_columns(
        pl.when(pl.col("_am")).then(None).otherwise(pl.col("age_range")).alias("age_range"),
        pl.when(pl.col("_gm")).then(None).otherwise(pl.col("gender")).alias("gender"),
    ).select(USER_INFO_COLUMNS).sort("user_id")

    episodes = pl.DataFrame({
        "user_id": uid[ep_user], "item_id": iid[ep_item], "cat_id": cid[ep_cat],
        "group": ep_group, "style": ep_style, "explore": explore, "start_day": ep_start,
        "has_cart": has[:, 0], "has_purchase": has[:, 1], "has_fav": has[:, 2],
        "delay_cart": delay[:, 0], "delay_purchase": delay[:, 1], "delay_fav": delay[:, 2],
    })
    return TmallReplica(log=log, user_info=user_info,
                        category_group={int(c): int(g) for c, g in zip(cid, cat_group)},
                        episodes=episodes)


def _duplicated(keys: np.ndarray) -> np.ndarray:
    """True for every occurrence of a key after its first."""
    _, first = np.unique(keys, return_index=True)
    dup = np.ones(len(keys), dtype=bool)
    dup[first] = False
    return dup


# ------------------------------------------------------------------------------------------ writing
def write_tmall_replica(out_dir: Path, config: TmallReplicaConfig) -> list[Path]:
    """Write the replica files into `out_dir` atomically; return their final paths.

    The files are written into a temporary folder beside `out_dir`, which is then renamed into place
    (an existing `out_dir` is replaced). Output is byte-for-byte deterministic for a given config."""
    out_dir = Path(out_dir)
    replica = simulate_tmall_replica(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    names = [LOG_FILE] + ([USER_INFO_FILE] if config.write_user_info else [])
    try:
        os.chmod(tmp, 0o755)
        replica.log.write_csv(tmp / LOG_FILE)
        if config.write_user_info:
            replica.user_info.write_csv(tmp / USER_INFO_FILE)
        _swap_into_place(tmp, out_dir, names)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / name for name in names]


def _swap_into_place(tmp: Path, out_dir: Path, names: list[str]) -> None:
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old)  # renaming a folder onto an empty folder is allowed on POSIX
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # A concurrent writer put a folder there first; same config -> same bytes, so keep theirs.
        if not all((out_dir / name).is_file() for name in names):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
