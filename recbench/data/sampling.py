"""Vectorised sampling helpers shared by the synthetic replicas (Zipf weights, weighted draws, distinct ids,
segment ranks)."""

from __future__ import annotations

import numpy as np


def zipf(n: int, exponent: float) -> np.ndarray:
    """Zipf weights 1 / rank**exponent for ranks 1..n, most popular first."""
    return 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent


def shuffled_zipf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Zipf weights in random order (rank 1 = the most popular)."""
    return zipf(n, exponent)[rng.permutation(n)]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def sample_weighted(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn with probability ~ (unnormalised) `weights`, one per uniform in u ([0, 1))."""
    cdf = np.cumsum(weights)
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def sample_within(rng: np.random.Generator, weights: np.ndarray, owner: np.ndarray, n_owners: int,
                  want: np.ndarray) -> np.ndarray:
    """For each owner index in `want`, draw one of that owner's members with probability ~ `weights`.

    The members are sorted by owner once; a draw is a searchsorted into the global cumulative weights,
    restricted to the owner's slice. Every owner in `want` must own at least one member."""
    order = np.argsort(owner, kind="stable")
    cum = np.cumsum(weights[order])
    start = np.searchsorted(owner[order], np.arange(n_owners), side="left")
    stop = np.searchsorted(owner[order], np.arange(n_owners), side="right")
    lo = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    hi = cum[np.maximum(stop - 1, 0)]
    pos = np.searchsorted(cum, lo[want] + rng.random(len(want)) * (hi[want] - lo[want]), side="right")
    return order[np.clip(pos, start[want], stop[want] - 1)]


def distinct_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """n distinct random int64 in [low, high), in random order."""
    return rng.choice(high - low, size=n, replace=False).astype(np.int64) + low


def segment_starts(counts: np.ndarray) -> np.ndarray:
    """Start offset of each segment of a flat array made of consecutive segments of these sizes."""
    return np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)


def rank_in_segment(counts: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its segment (segments consecutive, sizes `counts`)."""
    return np.arange(counts.sum()) - np.repeat(segment_starts(counts), counts)


def first_occurrence(keys: np.ndarray) -> np.ndarray:
    """True for the first occurrence of every key."""
    keep = np.zeros(len(keys), dtype=bool)
    keep[np.unique(keys, return_index=True)[1]] = True
    return keep
