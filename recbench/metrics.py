"""Exact, vectorised evaluation metrics for recbench.

Design rules shared by every function in this module:

* Inputs are 1-D numpy arrays, torch tensors (any device, any dtype) or
  sequences.  They are converted once to numpy; scores, predictions, labels and
  targets are computed in float64 so that pair counts (which can reach ~1e12
  for 1e6 rows) stay exactly representable.
* Results are plain Python floats (``float('nan')`` when a metric is undefined,
  e.g. only one class present), so they can be written to JSON records as-is.
* There is no Python loop over rows or over groups.  Grouped metrics sort once
  (``np.lexsort``, which is stable) so that each group -- and each run of tied
  scores inside a group -- is a contiguous segment, then use segment
  reductions (``np.add.reduceat``, ``np.bincount``, cumulative sums).  The
  only Python loop is over the bit levels of the inversion counter used by
  XAUC (log2 of the largest group's number of distinct predictions: ~20 for
  1e6 rows in one group, ~4 for groups of ~10 rows).
* XAUC (and numeric group ids) sort with ``np.sort`` on 64-bit keys that carry
  the row index in their low bits (``_sort_order``): numpy vectorises np.sort
  of integers with SIMD but not np.argsort (~5x apart at 1e6 rows here).
  xauc / grouped_xauc, rows per CPU-second on one thread (float32
  predictions, staytime targets with ties, 10 rows per group;
  ``benchmarks/metric_speed.py``, two runs at load average 6.5-7.6 on 2
  cores): 1e6 rows 0.68-0.70M / 0.44-0.71M with lexsort + per-position
  inversion counts, 3.2-3.4M / 2.2-3.6M now; 1e7 rows 0.38-0.40M /
  0.32-0.33M, now 2.7-2.9M / 2.4-2.5M, peak memory 1.85 / 1.93 GiB -> 0.92 /
  1.35 GiB; the same numbers bit for bit.
* Invalid input (length mismatch, non-finite values, labels outside {0, 1}
  where binary labels are required) raises ``ValueError`` with a one-line
  message instead of silently producing a wrong number.
* Ranking metrics (AUC, GAUC, XAUC, NDCG, HR, MRR) read logits or float64
  scores, never float32 probabilities: a float32 sigmoid rounds every logit
  above ~16.6 to 1.0, so logits 18 and 17 would tie (AUC 0.5 instead of 1.0).
  The task heads pass logits; ``logloss(..., logits=True)`` turns them into
  probabilities in float64.

torchmetrics (a dependency of the product) computes a metric here where it
defines exactly the same number and is at most 2x slower than our code.
Figures: 1e6 rows, 2 CPU threads, best of 3-7 runs, one shared machine
(noisy to ~+-50%):

* mae, rmse: torchmetrics.functional.mean_absolute_error /
  mean_squared_error(squared=False) on float64 tensors (the validation and
  the optional mask stay here).  numpy 11 ms / 4 ms, torchmetrics 11-21 ms /
  4-6 ms.
* auc stays ours.  torchmetrics' binary_auroc has the same definition (ROC
  trapezoid = Mann-Whitney, ties 1/2) but not the same number: it applies a
  sigmoid as soon as one score lies outside [0, 1], which even in float64
  rounds every logit above ~36.7 to 1.0 (logits 40 and 38: 0.5 instead of
  1.0); it builds the ROC rates in torch's default float32 (6e-8 off the
  exact value at 1e6 rows); one class gives 0.0 with a warning and empty
  input an IndexError.  It is also 2.3-4x slower (ours 115-134 ms,
  torchmetrics 314-465 ms; 6x with heavy ties).
* gauc, xauc, grouped_xauc stay ours: torchmetrics has no exact
  counterpart.  RetrievalAUROC (the closest) averages groups uniformly only,
  scores a one-class group 0 instead of skipping it, and loops over groups
  in Python: 105x slower at 1e6 rows / 1e5 groups (500 ms vs 52.6 s).
* ndcg_at_k, hit_rate_at_k, mrr stay ours: torchmetrics' retrieval metrics
  break ties differently (NDCG averages the gain of tied rows, as sklearn
  does; HR and MRR take an unstable argsort / topk), RetrievalMRR counts a
  positive only when its score is > 0 (so it is wrong on logits), and their
  per-list Python loop is 17-103x slower at 1e6 rows / 1e5 lists (comment
  lists hold 6 rows: ndcg@5 578 ms vs 59.6 s, hr@5 835 ms vs 14.0 s, mrr
  569 ms vs 25.7 s) and 3-19x slower at 1e4 lists.
* logloss stays ours: torchmetrics has no binary log-loss.

tests/test_metrics.py checks every function against sklearn, torchmetrics
(where the definitions meet: tie-free scores, both classes) and brute-force
references.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = [
    "METRIC_DEFINITIONS",
    "ON_LOGITS",
    "LOGLOSS_FROM_LOGITS",
    "auc",
    "gauc",
    "logloss",
    "mae",
    "rmse",
    "xauc",
    "grouped_xauc",
    "ndcg_at_k",
    "hit_rate_at_k",
    "mrr",
]


METRIC_DEFINITIONS: dict[str, str] = {
    "auc": (
        "ROC AUC computed exactly as the Mann-Whitney U statistic: the fraction of "
        "(positive, negative) pairs in which the positive has the higher score, a pair "
        "with tied scores counting 1/2 (average ranks, identical to "
        "sklearn.metrics.roc_auc_score); NaN if only one class is present."
    ),
    "gauc": (
        "Group AUC: the AUC (ties count 1/2) computed separately inside each group, "
        "skipping groups that contain only one class or fewer than min_samples rows, "
        "then averaged with weights equal to the group's row count ('impressions', "
        "default), its positive count ('positives') or 1 ('uniform'); NaN if no "
        "group qualifies."
    ),
    "logloss": (
        "Mean binary cross-entropy -[y*log(p) + (1-y)*log(1-p)] over all rows with "
        "labels y in {0,1} and probabilities p clipped to [eps, 1-eps] (eps=1e-7 by "
        "default); NaN for empty input."
    ),
    "mae": (
        "Mean absolute error |pred - target| averaged uniformly over all rows (or over "
        "the rows selected by the optional boolean mask), in float64 "
        "(torchmetrics mean_absolute_error); NaN if no row is selected."
    ),
    "rmse": (
        "Square root of the mean squared error (pred - target)^2 averaged uniformly "
        "over all rows (or over the rows selected by the optional boolean mask), in "
        "float64 (torchmetrics mean_squared_error, squared=False); NaN if no row is "
        "selected."
    ),
    "xauc": (
        "Exact XAUC: over all pairs of rows whose targets differ (pairs with tied "
        "targets are excluded), the fraction that the prediction orders the same way "
        "as the target, a pair with tied predictions counting 1/2; pooled over all "
        "rows (grouped_xauc computes it inside each group and averages with weights "
        "equal to the group's number of such pairs, or uniformly), NaN if no pair "
        "qualifies."
    ),
    "ndcg@k": (
        "NDCG@k per list (one list per group): DCG of the top-k rows ranked by "
        "descending score (ties broken by original row order, i.e. a stable sort), "
        "with gain = relevance label (linear, or 2^rel-1 if gain='exp') and discount "
        "1/log2(rank+1), divided by the DCG of the ideal top-k ordering; lists without "
        "any positive (label > 0) are skipped and the rest averaged uniformly."
    ),
    "hr@k": (
        "Hit rate@k: 1 if at least one positive (label > 0) is among the top-k rows of "
        "a list ranked by descending score (ties broken by original row order), else "
        "0; lists without any positive are skipped and the rest averaged uniformly."
    ),
    "mrr": (
        "Mean reciprocal rank: 1/rank of the first positive (label > 0) in a list "
        "ranked by descending score (ranks start at 1, ties broken by original row "
        "order); lists without any positive are skipped and the rest averaged "
        "uniformly."
    ),
}


# What a head appends to a definition when it scores the model's logits.
ON_LOGITS = (
    " Scores: the model's logits (float32 as output, float64 inside the metric), "
    "never float32 sigmoid probabilities, so confident rows keep their order."
)
LOGLOSS_FROM_LOGITS = (
    " Here p = sigmoid(logit) in float64: computed as BCE with logits on the logit "
    "clipped to +-log((1-eps)/eps), which equals clipping p to [eps, 1-eps]."
)


# ----------------------------------------------------------------------------
# Input conversion and validation
# ----------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a 1-D array-like / torch tensor to numpy without copying if possible.

    torch is looked up in ``sys.modules`` instead of imported so that this
    module stays importable (and cheap to import) without torch.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach()
        # half / bfloat16 have no numpy equivalent; upcast floats on the torch side.
        if x.is_floating_point():
            x = x.to(dtype=torch.float64)
        x = x.cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _float_array(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _binary_labels(x: Any, name: str = "labels") -> np.ndarray:
    arr = _float_array(x, name)
    if not np.all((arr == 0.0) | (arr == 1.0)):
        raise ValueError(f"{name} must contain only 0 and 1")
    return arr


def _check_lengths(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(f"input lengths differ: {desc}")
    return next(iter(lengths.values()))


def _group_codes(groups: Any) -> tuple[np.ndarray, int]:
    """Map arbitrary group ids (ints, strings, ...) to dense codes 0..G-1 in sorted id order.

    Numeric ids go through _sort_order (one np.sort of packed keys); other dtypes
    (strings, objects) through np.unique.  Both give the same codes.
    """
    g = _to_numpy(groups, "groups")
    if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
        raise ValueError("groups contains NaN or infinite values")
    if g.dtype.kind in "biuf" and len(g):
        order, sorted_keys = _sort_order(_order_key(g))
        new = _new_segment(sorted_keys)
        codes = np.empty(len(g), dtype=np.int64)
        codes[order] = _cumcount(new) - 1
        return codes, int(np.count_nonzero(new))
    uniq, codes = np.unique(g, return_inverse=True)
    return codes.reshape(-1).astype(np.int64, copy=False), len(uniq)


def _cumcount(flag: np.ndarray) -> np.ndarray:
    """Inclusive running count of True values, int64 (np.cumsum of a bool array into
    int32 first: several times faster than numpy's bool -> int64 accumulate)."""
    acc = np.int32 if len(flag) < 2**31 else np.int64
    return np.cumsum(flag, dtype=acc).astype(np.int64, copy=False)


def _new_segment(*sorted_cols: np.ndarray) -> np.ndarray:
    """Boolean mask marking the first row of each run of equal keys.

    The columns must already be sorted lexicographically so that equal keys
    are contiguous; a run changes whenever any column changes value.
    """
    n = len(sorted_cols[0])
    flag = np.empty(n, dtype=bool)
    if n == 0:
        return flag
    flag[0] = True
    flag[1:] = False
    for col in sorted_cols:
        flag[1:] |= col[1:] != col[:-1]
    return flag


def _segment_start_index(flag: np.ndarray) -> np.ndarray:
    """For every row, the index of the first row of its segment."""
    idx = np.where(flag, np.arange(len(flag)), 0)
    return np.maximum.accumulate(idx) if len(idx) else idx


def _order_key(x: np.ndarray) -> np.ndarray:
    """int64 keys with the same order and the same ties as the numeric array ``x``.

    Floats: +-magnitude of the IEEE bits (sign bit cleared), so -0.0 and +0.0 tie and
    the low zero bits of float32-derived values stay zero (_sort_order drops them).
    Integers and bool: the value itself (uint64 shifted by -2**63 to fit).
    """
    if x.dtype.kind == "f":
        bits = x.astype(np.float64).view(np.int64)  # a copy: modified in place
        sign = bits >> 63  # arithmetic shift: 0 for positive values, -1 for negative
        bits &= np.int64(2**63 - 1)
        bits ^= sign
        bits -= sign  # two's complement negation where negative
        return bits
    if x.dtype == np.uint64:
        return (x ^ np.uint64(1 << 63)).view(np.int64)
    return x.astype(np.int64, copy=False)


def _sort_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, sorted keys) of int64 ``keys``: ascending, equal keys in row order.

    np.sort of 64-bit integers is SIMD-vectorised in numpy and several times faster
    than np.argsort, so each row's index is packed into the low bits of its key and one
    np.sort does the work.  The keys are first made narrow without losing order or
    ties: offset from the minimum (exact in uint64) and shifted right past the low bits
    that are zero in every key (29 bits for float32-derived floats).  Keys still too
    wide to leave room for the index lose their low bits; rows whose shortened keys tie
    although their full keys differ are then put in order by the full key (an argsort
    of those rows only).  The sorted keys returned are the narrowed ones: same order and
    ties as ``keys``, not the same values.
    """
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    narrow = (keys - keys.min()).view(np.uint64)  # wraps in int64, exact in uint64
    common = int(np.bitwise_or.reduce(narrow))
    if common == 0:  # every key equal
        return np.arange(n, dtype=np.int64), narrow
    narrow >>= np.uint64((common & -common).bit_length() - 1)
    idx_bits = max(1, (n - 1).bit_length())
    drop = max(0, int(narrow.max()).bit_length() + idx_bits - 64)
    packed = narrow >> np.uint64(drop)
    packed <<= np.uint64(idx_bits)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & np.uint64((1 << idx_bits) - 1)).view(np.int64)
    if not drop:
        packed >>= np.uint64(idx_bits)
        return order, packed
    sorted_keys = narrow[order]
    descent = sorted_keys[1:] < sorted_keys[:-1]
    if descent.any():
        packed >>= np.uint64(idx_bits)
        run = _cumcount(_new_segment(packed))  # runs of equal shortened key
        bad_run = np.zeros(int(run[-1]) + 1, dtype=bool)
        bad_run[run[1:][descent]] = True
        at = np.flatnonzero(bad_run[run])  # positions of the runs out of order
        rows = order[at]  # in row order inside each run; runs are ordered among themselves
        rows = rows[np.argsort(narrow[rows], kind="stable")]
        order[at] = rows
        sorted_keys[at] = narrow[rows]
    return order, sorted_keys


def _tied_pairs(flag: np.ndarray, owner: np.ndarray | None, n_owner: int) -> np.ndarray:
    """Number of unordered pairs inside runs of equal keys, summed per owner group.

    ``flag`` marks run starts (from _new_segment); ``owner`` gives each row's
    group code (constant within a run), or None for a single group.
    """
    starts = np.flatnonzero(flag)
    sizes = np.diff(starts, append=len(flag))
    tied = sizes > 1  # usually a minority of the runs: sum only those
    starts, sizes = starts[tied], sizes[tied]
    pairs = sizes * (sizes - 1) // 2
    if owner is None:
        return np.array([float(pairs.sum())])
    return np.bincount(owner[starts], weights=pairs, minlength=n_owner)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    if values.size == 0 or total <= 0:
        return float("nan")
    return float(np.dot(values, weights) / total)


# ----------------------------------------------------------------------------
# AUC family
# ----------------------------------------------------------------------------


def _grouped_mann_whitney(
    scores: np.ndarray, labels: np.ndarray, codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group Mann-Whitney U, positive count and negative count.

    U_g = sum over positives of (#negatives in the group with a strictly lower
    score + 1/2 * #negatives with the same score).  This equals the
    average-rank formulation (R_pos - P(P+1)/2) used by sklearn, but it is built
    from integer and half-integer counts only, so it is exact in float64.
    """
    # By group, then ascending score.  Stability is irrelevant: rows of equal
    # (group, score) are pooled into one block below.  One group -> a plain
    # argsort, about 3x faster than the two-key lexsort at 1e6 rows.
    order = np.argsort(scores) if n_groups == 1 else np.lexsort((scores, codes))
    s, c, y = scores[order], codes[order], labels[order]

    # Blocks = runs of identical (group, score): the unit of tying.
    block_flag = _new_segment(c, s)
    block_starts = np.flatnonzero(block_flag)
    block_size = np.diff(np.append(block_starts, len(s))).astype(np.float64)
    block_pos = np.add.reduceat(y, block_starts)
    block_neg = block_size - block_pos
    block_group = c[block_starts]

    # Negatives strictly below each block, counted within its own group:
    # global exclusive cumsum minus the value at the group's first block.
    neg_before = np.cumsum(block_neg) - block_neg
    group_first_block = _segment_start_index(_new_segment(block_group))
    neg_below = neg_before - neg_before[group_first_block]

    u_block = block_pos * (neg_below + 0.5 * block_neg)
    u = np.bincount(block_group, weights=u_block, minlength=n_groups)
    pos = np.bincount(codes, weights=labels, minlength=n_groups)
    cnt = np.bincount(codes, minlength=n_groups).astype(np.float64)
    return u, pos, cnt - pos


def auc(scores: Any, labels: Any) -> float:
    """ROC AUC (Mann-Whitney, tied scores count 1/2); NaN unless both classes occur."""
    s = _float_array(scores, "scores")
    y = _binary_labels(labels)
    n = _check_lengths(scores=s, labels=y)
    if n == 0:
        return float("nan")
    u, pos, neg = _grouped_mann_whitney(s, y, np.zeros(n, dtype=np.int64), 1)
    if pos[0] == 0 or neg[0] == 0:
        return float("nan")
    return float(u[0] / (pos[0] * neg[0]))


_GAUC_WEIGHTS = ("impressions", "positives", "uniform")


def gauc(
    scores: Any,
    labels: Any,
    groups: Any,
    weight: str = "impressions",
    min_samples: int = 1,
) -> float:
    """Weighted mean of per-group AUCs over groups that contain both classes.

    weight: "impressions" (group row count), "positives" (group positive count)
    or "uniform".  Groups with fewer than ``min_samples`` rows or only one class
    are skipped; NaN if no group qualifies.
    """
    if weight not in _GAUC_WEIGHTS:
        raise ValueError(f"weight must be one of {_GAUC_WEIGHTS}, got {weight!r}")
    if int(min_samples) != min_samples or min_samples < 1:
        raise ValueError(f"min_samples must be a positive integer, got {min_samples!r}")
    s = _float_array(scores, "scores")
    y = _binary_labels(labels)
    codes, n_groups = _group_codes(groups)
    n = _check_lengths(scores=s, labels=y, groups=codes)
    if n == 0:
        return float("nan")

    u, pos, neg = _grouped_mann_whitney(s, y, codes, n_groups)
    size = pos + neg
    ok = (pos > 0) & (neg > 0) & (size >= min_samples)
    group_auc = u[ok] / (pos[ok] * neg[ok])
    if weight == "impressions":
        w = size[ok]
    elif weight == "positives":
        w = pos[ok]
    else:
        w = np.ones(group_auc.shape)
    return _weighted_mean(group_auc, w)


# ----------------------------------------------------------------------------
# Pointwise metrics
# ----------------------------------------------------------------------------


def logloss(probs: Any, labels: Any, eps: float = 1e-7, logits: bool = False) -> float:
    """Mean binary cross-entropy with p clipped to [eps, 1-eps].

    logits=False: ``probs`` are probabilities in [0, 1].  logits=True: ``probs``
    are logits z and p = sigmoid(z) is never materialised: the loss is
    softplus(-z) for y=1 and softplus(z) for y=0 in float64, with z clipped to
    +-log((1-eps)/eps) -- the same number as clipping p, without a float32
    sigmoid rounding confident rows to exactly 0 or 1.
    """
    if not (0.0 < eps < 0.5):
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    p = _float_array(probs, "logits" if logits else "probs")
    y = _binary_labels(labels)
    n = _check_lengths(**{"logits" if logits else "probs": p, "labels": y})
    if n == 0:
        return float("nan")
    if logits:
        bound = math.log1p(-eps) - math.log(eps)  # logit(1 - eps)
        z = np.clip(p, -bound, bound)
        # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
        return float(np.mean(np.logaddexp(0.0, np.where(y == 1.0, -z, z))))
    # Values outside [0, 1] mean logits were passed by mistake; clipping them
    # would silently produce a plausible-looking number, so refuse instead.
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probs must lie in [0, 1] (did you pass logits?)")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _masked_pair(pred: Any, target: Any, mask: Any | None):
    """(pred, target) as float64 torch tensors, restricted to the mask's rows, validated."""
    import torch

    p = _float_array(pred, "pred")
    t = _float_array(target, "target")
    _check_lengths(pred=p, target=t)
    if mask is not None:
        m = _to_numpy(mask, "mask")
        if m.dtype != np.bool_:
            raise ValueError(f"mask must be boolean, got dtype {m.dtype}")
        _check_lengths(pred=p, mask=m)
        p, t = p[m], t[m]
    return torch.from_numpy(np.ascontiguousarray(p)), torch.from_numpy(np.ascontiguousarray(t))


def mae(pred: Any, target: Any, mask: Any | None = None) -> float:
    """Mean absolute error over all rows (or rows where ``mask`` is True); NaN if none.

    Computed by torchmetrics.functional.mean_absolute_error in float64.
    """
    from torchmetrics.functional import mean_absolute_error

    p, t = _masked_pair(pred, target, mask)
    return float(mean_absolute_error(p, t)) if len(p) else float("nan")


def rmse(pred: Any, target: Any, mask: Any | None = None) -> float:
    """Root mean squared error over all rows (or rows where ``mask`` is True); NaN if none.

    Computed by torchmetrics.functional.mean_squared_error(squared=False) in float64.
    """
    from torchmetrics.functional import mean_squared_error

    p, t = _masked_pair(pred, target, mask)
    return float(mean_squared_error(p, t, squared=False)) if len(p) else float("nan")


# ----------------------------------------------------------------------------
# XAUC
# ----------------------------------------------------------------------------


def _count_inversions(
    values: np.ndarray, nbits: int, seg_sizes: np.ndarray, seg_group: np.ndarray | None, n_groups: int
) -> np.ndarray:
    """Per group, the number of pairs i < j in one segment with values[i] > values[j].

    ``values`` are non-negative integers below 2**nbits; the array is cut into
    contiguous segments of ``seg_sizes`` rows (one per group here), segment k belonging
    to group ``seg_group[k]`` (None: a single group).  Vectorised O(n * nbits) counting
    in the manner of a wavelet matrix: a pair (i, j) is an inversion exactly when, at the
    most significant bit where their values differ, v_i has a 1 and v_j a 0.  Levels go
    from the top bit down.  At each level every segment holds rows whose higher bits are
    equal, in their original order; the inversions decided at bit b inside a segment
    starting at s with zeros (bit b clear) at positions z_1..z_Z number
    sum_k (ones before z_k) = sum_k z_k - Z*s - Z(Z-1)/2.  Then the whole array is
    stably partitioned by bit b (zeros first, np.compress), so the zeros of each segment
    and the ones of each segment become the segments of the next level, in the same
    order -- their sizes follow from the zero counts without reading the array again.
    Per level: a few passes into reused buffers, no per-row or per-group Python loop.
    Counts are exact integers (float64 only in the per-group bincount, exact below
    2**53).
    """
    n = len(values)
    out = np.zeros(n_groups, dtype=np.float64)
    if n < 2 or nbits == 0:
        return out
    acc = np.int32 if n < 2**31 else np.int64
    cur = values.astype(acc)  # a copy: permuted in place below
    spare = np.empty_like(cur)
    scratch = np.empty_like(cur)
    zero = np.empty(n, dtype=bool)
    one = np.empty(n, dtype=bool)
    zeros_upto = np.empty(n, dtype=acc)
    zsum_upto = np.empty(n, dtype=np.int64) if seg_group is not None else None
    sizes = np.asarray(seg_sizes, dtype=np.int64)
    total = 0
    for b in range(nbits - 1, -1, -1):
        np.bitwise_and(cur, 1 << b, out=scratch)
        np.equal(scratch, 0, out=zero)
        np.cumsum(zero, dtype=acc, out=zeros_upto)
        nz = int(zeros_upto[-1])
        if nz == 0 or nz == n:  # nothing decided at this bit; the partition is the identity
            continue
        ends = np.cumsum(sizes)
        starts = ends - sizes
        z_end = zeros_upto[ends - 1].astype(np.int64)  # zeros up to each segment's end
        seg_zeros = np.diff(z_end, prepend=0)
        pairs_in = seg_zeros * (seg_zeros - 1) // 2
        if seg_group is None:
            # sum of zero positions = n*Z - sum_j zeros_upto[j]
            zpos_sum = n * nz - int(zeros_upto.sum(dtype=np.int64))
            total += zpos_sum - int(np.dot(seg_zeros, starts)) - int(pairs_in.sum())
        else:
            # per segment [s, e): sum of zero positions
            #   = e*Z + (e-s)*zeros_before_s - sum_{j in [s, e)} zeros_upto[j]
            np.cumsum(zeros_upto, dtype=np.int64, out=zsum_upto)
            seg_upto = zsum_upto[ends - 1] - np.where(starts > 0, zsum_upto[starts - 1], 0)
            zpos_sum = ends * seg_zeros + sizes * (z_end - seg_zeros) - seg_upto
            per_seg = zpos_sum - seg_zeros * starts - pairs_in
            out += np.bincount(seg_group, weights=per_seg, minlength=n_groups)
        if b:
            np.logical_not(zero, out=one)
            np.compress(zero, cur, out=spare[:nz])
            np.compress(one, cur, out=spare[nz:])
            cur, spare = spare, cur
            seg_ones = sizes - seg_zeros
            has_zero, has_one = seg_zeros > 0, seg_ones > 0
            sizes = np.concatenate((seg_zeros[has_zero], seg_ones[has_one]))
            if seg_group is not None:
                seg_group = np.concatenate((seg_group[has_zero], seg_group[has_one]))
    if seg_group is None:
        out[0] = total
    return out


# Widest (group, target rank, pred rank) key sorted as one int64; wider inputs first
# replace (group, target rank) by its dense rank.  A variable so tests can force that path.
_XAUC_KEY_BITS = 63


def _xauc_parts(
    pred: np.ndarray, target: np.ndarray, codes: np.ndarray | None, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (concordant + 1/2 * pred-tied) pair credit and valid-pair count.

    ``codes=None`` means one group.  Pairs are only formed inside a group.  Rows sorted by
    (group, target, pred) ascending: a valid pair (different targets) is discordant iff
    the earlier row has a strictly larger prediction, i.e. a strict inversion of the
    predictions' ranks.  Pairs with equal targets are never strict inversions (they are
    sorted by pred), and cross-group pairs are never counted (_count_inversions works
    inside groups).  With per-group tie counts:
        valid      = C(n_g, 2) - tied_target
        pred_tied  = tied_pred - tied_both      (valid pairs with equal pred)
        concordant = valid - pred_tied - discordant

    Every sort is an np.sort of packed 64-bit integer keys (_sort_order): dense ranks of
    target and pred, then -- grouped -- the rows by (group, pred) for the rank of the
    prediction inside its group (so the inversion counter needs only as many bit levels
    as the largest group has distinct predictions), and one sort of the key
    (group, target rank, pred rank in group), which also gives the tie runs.
    """
    n = len(pred)
    t_order, t_sorted = _sort_order(_order_key(target))
    rank_t = np.empty(n, dtype=np.int64)
    rank_t[t_order] = _cumcount(_new_segment(t_sorted)) - 1
    del t_sorted
    p_order, p_sorted = _sort_order(_order_key(pred))
    p_new = _new_segment(p_sorted)
    p_dense = _cumcount(p_new) - 1  # dense pred rank, in pred order
    del p_sorted

    if codes is None:
        rank_w = np.empty(n, dtype=np.int64)  # rank of the prediction in its group
        rank_w[p_order] = p_dense
        tied_pred = _tied_pairs(p_new, None, 1)
    else:
        # Rows by (group, pred): a stable sort by group of the rows in pred order.  The
        # codes are dense (0..G-1, 0 and 1 present when G > 1), so _sort_order's
        # narrowed sorted keys are the codes themselves.
        sub, g_by_gp = _sort_order(codes[p_order])
        g_by_gp = g_by_gp.view(np.int64)
        gp_new = _new_segment(g_by_gp, p_dense[sub])
        gp_dense = _cumcount(gp_new) - 1
        g_starts = np.flatnonzero(_new_segment(g_by_gp))
        g_base = np.repeat(gp_dense[g_starts], np.diff(g_starts, append=n))
        rank_w = np.empty(n, dtype=np.int64)
        rank_w[p_order[sub]] = gp_dense - g_base
        tied_pred = _tied_pairs(gp_new, g_by_gp, n_groups)
        del sub, g_by_gp, gp_new, gp_dense, g_base
    del p_order, p_new, p_dense

    w_bits = int(rank_w.max()).bit_length()
    t_bits = int(rank_t.max()).bit_length()
    g_bits = (n_groups - 1).bit_length() if codes is not None else 0
    if g_bits + t_bits + w_bits <= _XAUC_KEY_BITS:
        key = rank_t << w_bits
        if codes is not None:
            key |= codes << (t_bits + w_bits)
        key |= rank_w
        del rank_t, rank_w
        key.sort()
        g_sorted = key >> (t_bits + w_bits) if codes is not None else None
    else:
        # Too wide for one word: replace (group, target rank) by its dense rank first.
        sub, g_by_gt = _sort_order(codes[t_order])
        gt_order = t_order[sub]
        gt_new = _new_segment(g_by_gt, rank_t[gt_order])
        rank_gt = np.empty(n, dtype=np.int64)
        rank_gt[gt_order] = _cumcount(gt_new) - 1
        group_of_gt = g_by_gt[gt_new].view(np.int64)  # codes, as above
        key = (rank_gt << w_bits) | rank_w
        del rank_t, rank_w, rank_gt, gt_order, sub, g_by_gt, gt_new
        key.sort()
        g_sorted = group_of_gt[key >> w_bits]

    tied_target = _tied_pairs(_new_segment(key >> w_bits), g_sorted, n_groups)
    tied_both = _tied_pairs(_new_segment(key), g_sorted, n_groups)
    del g_sorted, t_order
    key &= (1 << w_bits) - 1  # the pred rank in its group, in (group, target, pred) order
    if codes is None:
        size = np.array([float(n)])
        discordant = _count_inversions(key, w_bits, size.astype(np.int64), None, 1)
    else:
        counts = np.bincount(codes, minlength=n_groups)
        size = counts.astype(np.float64)
        present = np.flatnonzero(counts)  # groups in sorted order, as the rows are
        discordant = _count_inversions(key, w_bits, counts[present], present, n_groups)
    all_pairs = size * (size - 1.0) / 2.0
    valid = all_pairs - tied_target
    pred_tied = tied_pred - tied_both
    concordant = valid - pred_tied - discordant
    return concordant + 0.5 * pred_tied, valid


def xauc(pred: Any, target: Any) -> float:
    """Exact XAUC over all pairs with different targets (pred ties count 1/2); O(n log n)."""
    p = _float_array(pred, "pred")
    t = _float_array(target, "target")
    n = _check_lengths(pred=p, target=t)
    if n < 2:
        return float("nan")
    credit, valid = _xauc_parts(p, t, None, 1)
    return float(credit[0] / valid[0]) if valid[0] > 0 else float("nan")


def grouped_xauc(pred: Any, target: Any, groups: Any, weight: str = "pairs") -> float:
    """XAUC inside each group, averaged over groups with at least one valid pair.

    weight="pairs" weights each group by its number of valid (different-target)
    pairs, which equals pooling all within-group pairs; "uniform" gives each
    qualifying group weight 1.
    """
    if weight not in ("pairs", "uniform"):
        raise ValueError(f"weight must be 'pairs' or 'uniform', got {weight!r}")
    p = _float_array(pred, "pred")
    t = _float_array(target, "target")
    codes, n_groups = _group_codes(groups)
    n = _check_lengths(pred=p, target=t, groups=codes)
    if n < 2:
        return float("nan")
    credit, valid = _xauc_parts(p, t, codes, n_groups)
    ok = valid > 0
    per_group = credit[ok] / valid[ok]
    w = valid[ok] if weight == "pairs" else np.ones(per_group.shape)
    return _weighted_mean(per_group, w)


# ----------------------------------------------------------------------------
# Grouped ranking metrics (one list per group)
# ----------------------------------------------------------------------------


def _ranked_lists(scores: Any, labels: Any, groups: Any):
    """Sort rows by (group, descending score); ties keep original row order.

    np.lexsort is stable, so rows with equal (group, score) stay in input
    order -- this is the documented tie-break for all ranking metrics.
    Returns (labels in input order, the ranking permutation, the list code of
    each ranked row, its 0-based rank within its list, number of lists).
    """
    s = _float_array(scores, "scores")
    y = _float_array(labels, "labels")
    if np.any(y < 0):
        raise ValueError("labels (relevance) must be non-negative")
    codes, n_groups = _group_codes(groups)
    _check_lengths(scores=s, labels=y, groups=codes)
    order = np.lexsort((-s, codes))
    c = codes[order]
    seg_start = _segment_start_index(_new_segment(c))
    rank0 = np.arange(len(c)) - seg_start
    return y, order, c, rank0, n_groups


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def ndcg_at_k(scores: Any, labels: Any, groups: Any, k: int, gain: str = "linear") -> float:
    """Mean NDCG@k over lists (groups) that contain a positive (label > 0).

    gain="linear" uses the relevance label as gain (as sklearn.metrics.ndcg_score);
    gain="exp" uses 2**label - 1.  Discount is 1/log2(rank + 1), ranks from 1.
    """
    k = _check_k(k)
    if gain not in ("linear", "exp"):
        raise ValueError(f"gain must be 'linear' or 'exp', got {gain!r}")
    y, order, c, rank0, n_groups = _ranked_lists(scores, labels, groups)
    if len(y) == 0:
        return float("nan")
    g = y if gain == "linear" else np.expm1(y * np.log(2.0))
    discount = 1.0 / np.log2(rank0 + 2.0)
    top = rank0 < k
    dcg = np.bincount(c[top], weights=(g[order] * discount)[top], minlength=n_groups)

    # Ideal DCG: the same lists with rows re-sorted by descending gain.
    codes_by_row = np.empty_like(c)
    codes_by_row[order] = c
    ideal_order = np.lexsort((-g, codes_by_row))
    ideal_top = rank0 < k  # list layout (starts/sizes) is identical in both orders
    idcg = np.bincount(
        c[ideal_top], weights=(g[ideal_order] * discount)[ideal_top], minlength=n_groups
    )
    ok = idcg > 0  # equivalent to "list has a positive"
    return float(np.mean(dcg[ok] / idcg[ok])) if ok.any() else float("nan")


def hit_rate_at_k(scores: Any, labels: Any, groups: Any, k: int) -> float:
    """Fraction of lists (with a positive) having a positive among their top-k rows."""
    k = _check_k(k)
    y, order, c, rank0, n_groups = _ranked_lists(scores, labels, groups)
    if len(y) == 0:
        return float("nan")
    positive = y[order] > 0
    has_pos = np.bincount(c, weights=positive, minlength=n_groups) > 0
    hit = np.bincount(c, weights=positive & (rank0 < k), minlength=n_groups) > 0
    return float(np.mean(hit[has_pos])) if has_pos.any() else float("nan")


def mrr(scores: Any, labels: Any, groups: Any) -> float:
    """Mean over lists (with a positive) of 1 / rank of the first positive (ranks from 1)."""
    y, order, c, rank0, n_groups = _ranked_lists(scores, labels, groups)
    if len(y) == 0:
        return float("nan")
    positive = y[order] > 0
    starts = np.flatnonzero(_new_segment(c))
    # Rank of first positive per list; non-positives get a sentinel larger than any rank.
    first = np.minimum.reduceat(np.where(positive, rank0, len(y)), starts)
    ok = first < len(y)
    return float(np.mean(1.0 / (first[ok] + 1.0))) if ok.any() else float("nan")
