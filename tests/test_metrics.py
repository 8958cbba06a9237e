"""Tests for recbench.metrics against sklearn, torchmetrics and brute-force O(n^2) references.

Random data deliberately contains many ties (scores rounded to one decimal,
small integer targets) because tie handling is where exact metrics differ.
torchmetrics is compared where its definition meets ours (tie-free scores,
groups with both classes); it computes some rates in float32, hence 1e-6.
The heads' collect + metrics path is tested on confident logits: ranking
metrics must read logits, not float32 probabilities.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    ndcg_score,
    roc_auc_score,
)

from torchmetrics.functional import kendall_rank_corrcoef
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.retrieval import RetrievalAUROC, RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG

from recbench import metrics as M
from recbench.tasks.actions import ActionOutcomeHead
from recbench.tasks.ctr import CTRHead
from recbench.tasks.live import MultiTaskHead, RetrievalHead
from recbench.tasks.staytime import D2QHead, ValueRegressionHead, WLRStaytimeHead


# ----------------------------------------------------------------------------
# Brute-force references (plain Python loops, deliberately naive)
# ----------------------------------------------------------------------------


def ref_auc(scores, labels):
    """Pairwise AUC: positive above negative = 1, tie = 1/2."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return float("nan")
    credit = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return credit / (len(pos) * len(neg))


def ref_gauc(scores, labels, groups, weight, min_samples=1):
    num = den = 0.0
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        y = labels[idx]
        if len(idx) < min_samples or y.min() == y.max():
            continue
        a = ref_auc(scores[idx], y)
        w = {"impressions": len(idx), "positives": y.sum(), "uniform": 1.0}[weight]
        num += w * a
        den += w
    return num / den if den else float("nan")


def ref_xauc_parts(pred, target):
    credit = pairs = 0.0
    n = len(pred)
    for i in range(n):
        for j in range(i + 1, n):
            if target[i] == target[j]:
                continue
            pairs += 1
            d = (pred[i] - pred[j]) * (target[i] - target[j])
            credit += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
    return credit, pairs


def ref_xauc(pred, target):
    credit, pairs = ref_xauc_parts(pred, target)
    return credit / pairs if pairs else float("nan")


def ref_grouped_xauc(pred, target, groups, weight):
    num = den = 0.0
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        credit, pairs = ref_xauc_parts(pred[idx], target[idx])
        if pairs == 0:
            continue
        w = pairs if weight == "pairs" else 1.0
        num += w * credit / pairs
        den += w
    return num / den if den else float("nan")


def ref_ranked_lists(scores, labels, groups):
    """Yield each list's labels ranked by descending score, ties in row order."""
    for g in sorted(set(groups.tolist())):
        idx = [i for i in range(len(groups)) if groups[i] == g]
        # Python's sort is stable, so equal scores keep original row order.
        idx.sort(key=lambda i: -scores[i])
        yield [labels[i] for i in idx]


def ref_ndcg(scores, labels, groups, k, gain="linear"):
    f = (lambda r: r) if gain == "linear" else (lambda r: 2.0**r - 1.0)
    vals = []
    for ranked in ref_ranked_lists(scores, labels, groups):
        if not any(r > 0 for r in ranked):
            continue
        dcg = sum(f(r) / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
        ideal = sorted(ranked, reverse=True)
        idcg = sum(f(r) / math.log2(i + 2) for i, r in enumerate(ideal[:k]))
        vals.append(dcg / idcg)
    return float(np.mean(vals)) if vals else float("nan")


def ref_hr(scores, labels, groups, k):
    vals = [
        float(any(r > 0 for r in ranked[:k]))
        for ranked in ref_ranked_lists(scores, labels, groups)
        if any(r > 0 for r in ranked)
    ]
    return float(np.mean(vals)) if vals else float("nan")


def ref_mrr(scores, labels, groups):
    vals = []
    for ranked in ref_ranked_lists(scores, labels, groups):
        hits = [i for i, r in enumerate(ranked) if r > 0]
        if hits:
            vals.append(1.0 / (hits[0] + 1))
    return float(np.mean(vals)) if vals else float("nan")


def tied_binary_data(rng, n, n_groups=None, p_pos=0.4):
    scores = np.round(rng.random(n), 1)  # heavy ties
    labels = (rng.random(n) < p_pos).astype(np.int64)
    if n_groups is None:
        return scores, labels
    groups = rng.integers(0, n_groups, n)
    return scores, labels, groups


def sigmoid64(z):
    return torch.sigmoid(torch.as_tensor(np.asarray(z, dtype=np.float64))).numpy()


def tm_retrieval(metric, scores, target, groups):
    """A torchmetrics retrieval metric over lists given by `groups` (one update, one compute)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(torch.as_tensor(scores), torch.as_tensor(target), indexes=torch.as_tensor(groups)).item()


def same(a, b, tol=1e-12):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ----------------------------------------------------------------------------
# AUC
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3000))
    scores, labels = tied_binary_data(rng, n)
    labels[0], labels[1] = 0, 1  # guarantee both classes
    got = M.auc(scores, labels)
    assert isinstance(got, float)
    assert got == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_matches_pairwise_reference_small():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        scores = rng.integers(0, 4, n).astype(float)
        labels = rng.integers(0, 2, n)
        assert same(M.auc(scores, labels), ref_auc(scores, labels))


def test_auc_known_values_and_ties():
    assert M.auc([0.1, 0.9], [0, 1]) == 1.0
    assert M.auc([0.9, 0.1], [0, 1]) == 0.0
    assert M.auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5  # all tied -> every pair 1/2
    # bool labels and float32 scores are accepted
    assert M.auc(np.array([0.2, 0.3], np.float32), np.array([False, True])) == 1.0


def test_auc_single_class_and_empty_are_nan():
    assert math.isnan(M.auc([0.1, 0.2, 0.3], [1, 1, 1]))
    assert math.isnan(M.auc([0.1, 0.2, 0.3], [0, 0, 0]))
    assert math.isnan(M.auc([], []))


def test_auc_torch_input():
    rng = np.random.default_rng(2)
    scores, labels = tied_binary_data(rng, 500)
    expected = roc_auc_score(labels, scores)
    got = M.auc(torch.tensor(scores, dtype=torch.float32), torch.tensor(labels))
    # float32 rounding of one-decimal values preserves their order and ties
    assert got == pytest.approx(expected, abs=1e-12)
    got_bf16 = M.auc(torch.tensor(scores).to(torch.bfloat16), torch.tensor(labels).bool())
    assert got_bf16 == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "scores, labels, msg",
    [
        ([0.1, 0.2], [0, 1, 1], "lengths differ"),
        ([0.1, float("nan")], [0, 1], "NaN or infinite"),
        ([0.1, float("inf")], [0, 1], "NaN or infinite"),
        ([0.1, 0.2], [0, 2], "only 0 and 1"),
        ([0.1, 0.2], [0, 0.5], "only 0 and 1"),
        ([[0.1, 0.2]], [[0, 1]], "must be 1-D"),
    ],
)
def test_auc_validation(scores, labels, msg):
    with pytest.raises(ValueError, match=msg):
        M.auc(scores, labels)


# ----------------------------------------------------------------------------
# GAUC
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("weight", ["impressions", "positives", "uniform"])
@pytest.mark.parametrize("seed", range(5))
def test_gauc_matches_bruteforce(weight, seed):
    rng = np.random.default_rng(100 + seed)
    scores, labels, groups = tied_binary_data(rng, 600, n_groups=40)
    got = M.gauc(scores, labels, groups, weight=weight)
    assert got == pytest.approx(ref_gauc(scores, labels, groups, weight), abs=1e-12)


@pytest.mark.parametrize("weight", ["impressions", "positives", "uniform"])
def test_gauc_matches_sklearn_per_group(weight):
    rng = np.random.default_rng(7)
    scores, labels, groups = tied_binary_data(rng, 2000, n_groups=60)
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        if labels[m].min() == labels[m].max():
            continue
        w = {"impressions": m.sum(), "positives": labels[m].sum(), "uniform": 1}[weight]
        num += w * roc_auc_score(labels[m], scores[m])
        den += w
    assert M.gauc(scores, labels, groups, weight=weight) == pytest.approx(num / den, abs=1e-12)


def test_gauc_min_samples_and_string_groups():
    rng = np.random.default_rng(3)
    scores, labels, groups = tied_binary_data(rng, 800, n_groups=80)
    for ms in (1, 8, 12):
        got = M.gauc(scores, labels, groups, min_samples=ms)
        assert got == pytest.approx(ref_gauc(scores, labels, groups, "impressions", ms), abs=1e-12)
    # group ids of any dtype are accepted; only the partition matters
    str_groups = np.array([f"user_{g}" for g in groups])
    # (group order differs, so the weighted sum may differ in the last ulp)
    assert M.gauc(scores, labels, str_groups) == pytest.approx(M.gauc(scores, labels, groups), abs=1e-14)
    # a min_samples larger than every group leaves nothing -> nan
    assert math.isnan(M.gauc(scores, labels, groups, min_samples=10_000))


def test_gauc_skips_single_class_groups():
    scores = [0.1, 0.9, 0.5, 0.6, 0.7, 0.2]
    labels = [0, 1, 1, 1, 0, 0]
    groups = [0, 0, 1, 1, 2, 2]  # only group 0 has both classes (AUC 1)
    assert M.gauc(scores, labels, groups) == 1.0
    assert math.isnan(M.gauc([0.1, 0.2], [1, 1], [0, 1]))
    assert math.isnan(M.gauc([], [], []))


def test_gauc_single_group_equals_auc_and_torch_input():
    rng = np.random.default_rng(4)
    scores, labels, groups = tied_binary_data(rng, 1000, n_groups=30)
    assert M.gauc(scores, labels, np.zeros(1000, int)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12
    )
    got = M.gauc(torch.tensor(scores), torch.tensor(labels), torch.tensor(groups), weight="uniform")
    assert got == pytest.approx(ref_gauc(scores, labels, groups, "uniform"), abs=1e-12)


def test_gauc_validation():
    with pytest.raises(ValueError, match="weight must be one of"):
        M.gauc([0.1, 0.2], [0, 1], [0, 0], weight="clicks")
    with pytest.raises(ValueError, match="min_samples"):
        M.gauc([0.1, 0.2], [0, 1], [0, 0], min_samples=0)
    with pytest.raises(ValueError, match="lengths differ"):
        M.gauc([0.1, 0.2], [0, 1], [0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.gauc([0.1, 0.2], [0, 3], [0, 0])


def test_gauc_exact_at_1e6_rows_1e5_groups():
    rng = np.random.default_rng(5)
    n = 1_000_000
    scores, labels, groups = tied_binary_data(rng, n, n_groups=100_000, p_pos=0.3)
    got = M.gauc(scores, labels, groups)  # speed is measured by the benchmark, not asserted here
    # Spot-check exactness on the first groups against the per-group reference.
    keep = groups < 50
    sub = M.gauc(scores[keep], labels[keep], groups[keep])
    assert sub == pytest.approx(ref_gauc(scores[keep], labels[keep], groups[keep], "impressions"), abs=1e-12)
    assert 0.45 < got < 0.55  # random scores carry no signal


# ----------------------------------------------------------------------------
# logloss, mae, rmse
# ----------------------------------------------------------------------------


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(6)
    probs = np.clip(np.round(rng.random(5000), 1), 0.05, 0.95)
    labels = rng.integers(0, 2, 5000)
    assert M.logloss(probs, labels) == pytest.approx(log_loss(labels, probs), rel=1e-12)
    got_t = M.logloss(torch.tensor(probs), torch.tensor(labels))
    assert got_t == pytest.approx(log_loss(labels, probs), rel=1e-12)


def test_logloss_clipping_and_validation():
    eps = 1e-7
    # confidently wrong predictions are clipped to eps instead of giving inf
    got = M.logloss([0.0, 1.0], [1, 0], eps=eps)
    assert got == pytest.approx(-math.log(eps), rel=1e-9)
    assert M.logloss([0.0, 1.0], [0, 1]) == pytest.approx(-math.log1p(-eps), rel=1e-6)
    assert math.isnan(M.logloss([], []))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.logloss([1.5, 0.2], [1, 0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.logloss([0.5, 0.2], [1, -1])


def test_mae_rmse_match_sklearn_with_mask():
    rng = np.random.default_rng(8)
    pred = rng.normal(size=3000)
    target = np.round(rng.normal(size=3000), 1)
    assert M.mae(pred, target) == pytest.approx(mean_absolute_error(target, pred), rel=1e-12)
    assert M.rmse(pred, target) == pytest.approx(math.sqrt(mean_squared_error(target, pred)), rel=1e-12)
    mask = rng.random(3000) < 0.3
    assert M.mae(pred, target, mask=mask) == pytest.approx(
        mean_absolute_error(target[mask], pred[mask]), rel=1e-12
    )
    assert M.rmse(torch.tensor(pred), torch.tensor(target), mask=torch.tensor(mask)) == pytest.approx(
        math.sqrt(mean_squared_error(target[mask], pred[mask])), rel=1e-12
    )


def test_mae_rmse_edge_cases():
    assert math.isnan(M.mae([1.0, 2.0], [1.0, 3.0], mask=np.array([False, False])))
    assert math.isnan(M.rmse([], []))
    assert M.rmse([1.0, 2.0], [1.0, 4.0], mask=np.array([False, True])) == 2.0
    with pytest.raises(ValueError, match="mask must be boolean"):
        M.mae([1.0, 2.0], [1.0, 3.0], mask=np.array([0, 1]))
    with pytest.raises(ValueError, match="lengths differ"):
        M.rmse([1.0, 2.0], [1.0, 3.0], mask=np.array([True]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.mae([1.0, float("nan")], [1.0, 3.0])


# ----------------------------------------------------------------------------
# XAUC
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(15))
def test_xauc_matches_bruteforce_with_ties(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(2, 150))
    pred = np.round(rng.random(n), 1)
    target = rng.integers(0, int(rng.integers(1, 8)), n).astype(float)
    assert same(M.xauc(pred, target), ref_xauc(pred, target))


def test_xauc_binary_target_equals_auc():
    # With a 0/1 target every valid pair is (positive, negative): XAUC == AUC.
    rng = np.random.default_rng(9)
    scores, labels = tied_binary_data(rng, 4000)
    assert M.xauc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_xauc_edge_cases_and_torch():
    assert M.xauc([1, 2, 3], [10, 20, 30]) == 1.0
    assert M.xauc([3, 2, 1], [10, 20, 30]) == 0.0
    assert M.xauc([1, 1, 1], [10, 20, 30]) == 0.5
    assert math.isnan(M.xauc([1, 2, 3], [5, 5, 5]))  # all targets tied -> no pair
    assert math.isnan(M.xauc([1.0], [2.0]))
    assert math.isnan(M.xauc([], []))
    rng = np.random.default_rng(10)
    pred, target = np.round(rng.random(100), 1), rng.integers(0, 5, 100)
    assert M.xauc(torch.tensor(pred), torch.tensor(target)) == pytest.approx(
        ref_xauc(pred, target), abs=1e-12
    )
    with pytest.raises(ValueError, match="lengths differ"):
        M.xauc([1, 2], [1])


def test_xauc_large_is_exact():
    # Exact pair counts at 2e5 rows: compare against an independent rank-based
    # count (for each target level, predictions of lower-target rows below it).
    rng = np.random.default_rng(11)
    n = 200_000
    target = rng.integers(0, 20, n)
    pred = np.round(target + rng.normal(scale=5.0, size=n), 0)
    got = M.xauc(pred, target)
    credit = pairs = 0.0
    below = np.array([], dtype=float)
    for level in np.unique(target):  # loop over 20 levels, not rows (reference only)
        cur = np.sort(pred[target == level])
        below_sorted = np.sort(below)
        lt = np.searchsorted(below_sorted, cur, side="left")
        le = np.searchsorted(below_sorted, cur, side="right")
        credit += lt.sum() + 0.5 * (le - lt).sum()
        pairs += len(cur) * len(below)
        below = np.concatenate([below, cur])
    assert got == pytest.approx(credit / pairs, abs=1e-12)


@pytest.mark.parametrize("weight", ["pairs", "uniform"])
@pytest.mark.parametrize("seed", range(4))
def test_grouped_xauc_matches_bruteforce(weight, seed):
    rng = np.random.default_rng(300 + seed)
    n = 400
    pred = np.round(rng.random(n), 1)
    target = rng.integers(0, 4, n).astype(float)
    groups = rng.integers(0, 25, n)
    got = M.grouped_xauc(pred, target, groups, weight=weight)
    assert got == pytest.approx(ref_grouped_xauc(pred, target, groups, weight), abs=1e-12)


def test_grouped_xauc_edge_cases():
    # groups whose targets are all tied are skipped; none left -> nan
    assert math.isnan(M.grouped_xauc([1, 2, 3, 4], [1, 1, 2, 2], [0, 0, 1, 1]))
    assert M.grouped_xauc([1, 2, 3, 0], [1, 2, 5, 5], [0, 0, 1, 1]) == 1.0
    # "pairs" weighting with one group == plain xauc
    rng = np.random.default_rng(12)
    pred, target = np.round(rng.random(300), 1), rng.integers(0, 6, 300)
    assert M.grouped_xauc(pred, target, np.zeros(300, int)) == pytest.approx(M.xauc(pred, target), abs=1e-12)
    with pytest.raises(ValueError, match="weight must be"):
        M.grouped_xauc([1, 2], [1, 2], [0, 0], weight="impressions")


# XAUC's sort-based implementation (_sort_order on packed keys, the bit-level
# inversion counter with segment bookkeeping) against the brute-force pair loops
# above: random ties, random groups, awkward float values, every code path.


def xauc_case(rng, n):
    """Random (pred, target, groups) of one of several tie / value patterns."""
    kind = int(rng.integers(0, 6))
    if kind == 0:  # heavy ties on both sides
        pred = np.round(rng.random(n), 1)
        target = rng.integers(0, int(rng.integers(1, 6)), n).astype(float)
    elif kind == 1:  # float32 model outputs (the exact fast path), staytime-like targets
        pred = rng.normal(size=n).astype(np.float32)
        target = np.round(rng.exponential(3.0, n), 1)
    elif kind == 2:  # continuous float64 on both sides, negative values
        pred, target = rng.normal(size=n), rng.normal(size=n)
    elif kind == 3:  # signed zeros (-0.0 == 0.0 is a tie) and integers
        pred = rng.choice([-0.0, 0.0, 1.0, -1.0], n)
        target = rng.integers(-3, 3, n)
    elif kind == 4:  # neighbouring floats over a huge range: forces _sort_order's repair
        base = rng.choice([-1e300, -1.0, 1.0, 3.0, 1e300], n)
        pred = base + rng.integers(0, 4, n) * np.spacing(base)
        target = rng.choice([1e-300, 1.0, np.nextafter(1.0, 2.0), 2.0], n)
    else:  # all predictions equal
        pred = np.full(n, 0.25)
        target = rng.integers(0, 4, n).astype(float)
    groups = rng.integers(0, int(rng.integers(1, max(2, n // 2) + 1)), n)
    return pred, target, groups


@pytest.mark.parametrize("seed", range(40))
def test_xauc_and_grouped_match_bruteforce_random_cases(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 90))
    pred, target, groups = xauc_case(rng, n)
    p64, t64 = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    assert same(M.xauc(pred, target), ref_xauc(p64, t64))
    for weight in ("pairs", "uniform"):
        got = M.grouped_xauc(pred, target, groups, weight=weight)
        assert same(got, ref_grouped_xauc(p64, t64, groups, weight))


@pytest.mark.parametrize("seed", range(6))
def test_grouped_xauc_wide_key_path(monkeypatch, seed):
    # Inputs whose (group, target rank, pred rank) key would not fit one int64 take
    # another route (dense rank of (group, target) first); force it on small inputs.
    rng = np.random.default_rng(2000 + seed)
    pred, target, groups = xauc_case(rng, int(rng.integers(2, 90)))
    p64, t64 = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    fast = M.grouped_xauc(pred, target, groups)
    monkeypatch.setattr(M, "_XAUC_KEY_BITS", 0)
    assert same(M.grouped_xauc(pred, target, groups), ref_grouped_xauc(p64, t64, groups, "pairs"))
    assert M.grouped_xauc(pred, target, groups) == fast or math.isnan(fast)


def test_xauc_edge_cases_more():
    assert math.isnan(M.xauc([0.3], [1.0]))  # one row
    assert math.isnan(M.grouped_xauc([0.3], [1.0], [7]))
    assert math.isnan(M.xauc(np.arange(10.0), np.full(10, 3.0)))  # all targets equal
    assert math.isnan(M.grouped_xauc(np.arange(10.0), np.full(10, 3.0), np.arange(10) % 3))
    # all predictions equal: every valid pair is a tie -> 1/2
    assert M.xauc(np.full(50, -0.0), np.arange(50.0)) == 0.5
    assert M.grouped_xauc(np.zeros(50), np.arange(50.0), np.arange(50) % 4) == 0.5
    # a group with one row contributes nothing; the other groups decide
    assert M.grouped_xauc([5.0, 1.0, 2.0, 3.0], [9.0, 1.0, 2.0, 3.0], [0, 1, 1, 1]) == 1.0
    assert M.grouped_xauc([5.0, 3.0, 2.0], [9.0, 1.0, 2.0], ["solo", "u", "u"], weight="uniform") == 0.0
    # -0.0 and 0.0 tie, on either side
    assert M.xauc([-0.0, 0.0], [1.0, 2.0]) == 0.5
    assert math.isnan(M.xauc([1.0, 2.0], [-0.0, 0.0]))
    # float32 / bfloat16 / int / bool inputs and torch tensors give the same numbers
    rng = np.random.default_rng(13)
    pred, target = rng.normal(size=200).astype(np.float32), rng.integers(0, 5, 200)
    want = ref_xauc(pred.astype(np.float64), target.astype(np.float64))
    assert same(M.xauc(pred, target), want)
    assert same(M.xauc(torch.from_numpy(pred), torch.from_numpy(target)), want)
    assert same(M.xauc(torch.from_numpy(pred).to(torch.bfloat16), target),
                ref_xauc(torch.from_numpy(pred).to(torch.bfloat16).double().numpy(), target.astype(float)))
    assert same(M.xauc(target > 2, pred), ref_xauc((target > 2).astype(float), pred.astype(float)))


def test_sort_order_matches_stable_argsort():
    rng = np.random.default_rng(14)
    cases = [
        np.array([], dtype=np.float64),
        np.array([3.5]),
        np.full(17, 2.0),
        np.round(rng.normal(size=5000), 2),
        rng.normal(size=5000).astype(np.float32),
        np.array([-0.0, 0.0, -0.0, 1e-320, -1e-320, 0.0]),  # signed zeros tie; subnormals
        # neighbouring floats spread over a huge range: shortened keys collide
        np.concatenate([b + np.arange(6) * np.spacing(b) for b in (-1e300, -2.0, 1.0, 7.0, 1e300)])[
            rng.permutation(30)
        ],
        rng.choice(np.array([1e300, 1.0, np.nextafter(1.0, 2.0), -5.0]), 4000),
        rng.integers(-(2**63), 2**63 - 1, 3000, dtype=np.int64, endpoint=True),
        np.array([2**63 - 1, -(2**63), 0, -1, 2**63 - 1], dtype=np.int64),
        rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True),
        rng.integers(0, 2, 300).astype(bool),
        rng.integers(0, 40, 3000).astype(np.int16),
    ]
    for x in cases:
        order, sorted_keys = M._sort_order(M._order_key(x))
        want = np.argsort(x, kind="stable")
        if x.dtype.kind == "f":
            want = np.lexsort((np.arange(len(x)), x + 0.0))  # -0.0 == 0.0: row order
        np.testing.assert_array_equal(order, want, err_msg=str(x.dtype))
        # narrowed sorted keys: same ties as the values, strictly increasing between them
        xs = x[order]
        np.testing.assert_array_equal(sorted_keys[1:] == sorted_keys[:-1], xs[1:] == xs[:-1])
        assert np.all(sorted_keys[1:] >= sorted_keys[:-1])


def test_group_codes_match_np_unique():
    rng = np.random.default_rng(15)
    for g in (
        rng.integers(-5, 5, 1000),
        rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True),
        np.array([2**63 - 1, -(2**63), 0, 2**63 - 1], dtype=np.int64),
        np.round(rng.normal(size=1000), 1),
        np.array([-0.0, 0.0, 1.5, -0.0]),
        rng.integers(0, 2, 50).astype(bool),
        rng.integers(0, 9, 300).astype(np.uint8),
        np.array(["b", "a", "b", "c"]),
        np.array([7]),
    ):
        codes, n_groups = M._group_codes(g)
        uniq, want = np.unique(g, return_inverse=True)
        np.testing.assert_array_equal(codes, want.reshape(-1))
        assert n_groups == len(uniq) and codes.dtype == np.int64


def test_grouped_xauc_exact_at_5e4_rows():
    # Many small groups (the production shape: users), float32 predictions, staytime
    # targets with ties; the per-group reference is the brute-force pair loop.
    rng = np.random.default_rng(16)
    n = 50_000
    groups = rng.integers(0, 5_000, n)
    target = np.round(rng.exponential(20.0, n), 0)
    pred = (0.05 * target + rng.normal(size=n)).astype(np.float32)
    order = np.argsort(groups, kind="stable")
    g_sorted, p_sorted, t_sorted = groups[order], pred[order].astype(np.float64), target[order]
    bounds = np.flatnonzero(np.diff(g_sorted)) + 1
    num = den = num_u = den_u = 0.0
    for p_g, t_g in zip(np.split(p_sorted, bounds), np.split(t_sorted, bounds)):
        credit, pairs = ref_xauc_parts(p_g, t_g)
        if pairs:
            num, den = num + credit, den + pairs
            num_u, den_u = num_u + credit / pairs, den_u + 1
    assert M.grouped_xauc(pred, target, groups) == pytest.approx(num / den, abs=1e-12)
    assert M.grouped_xauc(pred, target, groups, weight="uniform") == pytest.approx(num_u / den_u, abs=1e-12)


# ----------------------------------------------------------------------------
# Ranking metrics
# ----------------------------------------------------------------------------


def ranking_data(rng, n=1500, n_groups=120, graded=True):
    scores = np.round(rng.random(n), 1)  # ties within lists
    hi = 4 if graded else 2
    labels = rng.integers(0, hi, n) * (rng.random(n) < 0.3)
    groups = rng.integers(0, n_groups, n)
    return scores, labels.astype(float), groups


@pytest.mark.parametrize("k", [1, 3, 10, 1000])
@pytest.mark.parametrize("graded", [True, False])
def test_ranking_metrics_match_bruteforce_with_ties(k, graded):
    rng = np.random.default_rng(400 + k + graded)
    scores, labels, groups = ranking_data(rng, graded=graded)
    assert M.ndcg_at_k(scores, labels, groups, k) == pytest.approx(
        ref_ndcg(scores, labels, groups, k), abs=1e-12
    )
    assert M.ndcg_at_k(scores, labels, groups, k, gain="exp") == pytest.approx(
        ref_ndcg(scores, labels, groups, k, gain="exp"), abs=1e-12
    )
    assert M.hit_rate_at_k(scores, labels, groups, k) == pytest.approx(
        ref_hr(scores, labels, groups, k), abs=1e-12
    )
    assert M.mrr(scores, labels, groups) == pytest.approx(ref_mrr(scores, labels, groups), abs=1e-12)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_ndcg_matches_sklearn_without_ties(k):
    # sklearn averages over tied scores, so compare on continuous scores; it
    # also counts all-zero lists (as 0), so only lists with a positive are kept.
    rng = np.random.default_rng(13)
    n_lists, size = 200, 20
    scores = rng.random((n_lists, size))
    rel = rng.integers(0, 4, (n_lists, size)) * (rng.random((n_lists, size)) < 0.3)
    rel[:5] = 0  # some lists without positives, which must be skipped
    keep = rel.sum(axis=1) > 0
    expected = ndcg_score(rel[keep], scores[keep], k=k)
    groups = np.repeat(np.arange(n_lists), size)
    got = M.ndcg_at_k(scores.ravel(), rel.ravel(), groups, k)
    assert got == pytest.approx(expected, abs=1e-12)


def test_ranking_tie_break_is_original_row_order():
    # All scores tied: the ranking is the input order, so the positive in row 2
    # is at rank 3.
    scores, labels, groups = [0.5, 0.5, 0.5, 0.5], [0, 0, 1, 0], [7, 7, 7, 7]
    assert M.mrr(scores, labels, groups) == pytest.approx(1 / 3)
    assert M.hit_rate_at_k(scores, labels, groups, 2) == 0.0
    assert M.hit_rate_at_k(scores, labels, groups, 3) == 1.0
    assert M.ndcg_at_k(scores, labels, groups, 3) == pytest.approx(1 / math.log2(4))
    # Interleaved groups: per-list order is still the input order within the list.
    assert M.mrr([1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)


def test_ranking_skips_lists_without_positive_and_empty():
    scores = [0.9, 0.1, 0.8, 0.7]
    labels = [1, 0, 0, 0]
    groups = [0, 0, 1, 1]  # list 1 has no positive -> skipped
    assert M.mrr(scores, labels, groups) == 1.0
    assert M.hit_rate_at_k(scores, labels, groups, 1) == 1.0
    assert M.ndcg_at_k(scores, labels, groups, 2) == 1.0
    for fn in (lambda *a: M.ndcg_at_k(*a, k=3), lambda *a: M.hit_rate_at_k(*a, k=3), M.mrr):
        assert math.isnan(fn([0.1, 0.2], [0, 0], [0, 1]))
        assert math.isnan(fn([], [], []))


def test_ranking_torch_input_and_validation():
    rng = np.random.default_rng(14)
    scores, labels, groups = ranking_data(rng, n=500, n_groups=40)
    t = (torch.tensor(scores), torch.tensor(labels), torch.tensor(groups))
    assert M.ndcg_at_k(*t, k=5) == pytest.approx(ref_ndcg(scores, labels, groups, 5), abs=1e-12)
    assert M.mrr(*t) == pytest.approx(ref_mrr(scores, labels, groups), abs=1e-12)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        M.ndcg_at_k(scores, labels, groups, 0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        M.hit_rate_at_k(scores, labels, groups, 2.5)
    with pytest.raises(ValueError, match="non-negative"):
        M.mrr([0.1, 0.2], [-1, 1], [0, 0])
    with pytest.raises(ValueError, match="lengths differ"):
        M.mrr([0.1, 0.2], [0, 1], [0])


# ----------------------------------------------------------------------------
# Definitions
# ----------------------------------------------------------------------------


def test_metric_definitions_cover_every_metric():
    expected = {"auc", "gauc", "logloss", "mae", "rmse", "xauc", "ndcg@k", "hr@k", "mrr"}
    assert expected <= set(M.METRIC_DEFINITIONS)
    for name, text in M.METRIC_DEFINITIONS.items():
        assert isinstance(text, str) and len(text) > 40, name
    # the rules that make numbers comparable are spelled out
    assert "1/2" in M.METRIC_DEFINITIONS["auc"]
    for w in ("impressions", "positives", "uniform"):
        assert w in M.METRIC_DEFINITIONS["gauc"]
    assert "tied targets are excluded" in M.METRIC_DEFINITIONS["xauc"]
    assert "original row order" in M.METRIC_DEFINITIONS["mrr"]


# ----------------------------------------------------------------------------
# Cross-checks against torchmetrics (where its definition meets ours)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_torchmetrics_binary_auroc_with_ties(seed):
    # scores in [0, 1], so torchmetrics applies no sigmoid; it builds its rates in float32
    rng = np.random.default_rng(500 + seed)
    n = int(rng.integers(2, 5000))
    scores, labels = tied_binary_data(rng, n)
    labels[0], labels[1] = 0, 1
    expected = binary_auroc(torch.tensor(scores), torch.tensor(labels)).item()
    assert M.auc(scores, labels) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_gauc_uniform_matches_torchmetrics_retrieval_auroc(seed):
    # RetrievalAUROC = uniform mean of per-group AUROC; it scores one-class groups 0, so pass only
    # groups with both classes (which are exactly the groups gauc keeps)
    rng = np.random.default_rng(600 + seed)
    scores, labels, groups = tied_binary_data(rng, 1500, n_groups=50)
    pos = np.bincount(groups, weights=labels, minlength=50)
    size = np.bincount(groups, minlength=50)
    keep = np.isin(groups, np.flatnonzero((pos > 0) & (pos < size)))
    expected = tm_retrieval(RetrievalAUROC(empty_target_action="skip"), scores[keep], labels[keep], groups[keep])
    assert M.gauc(scores, labels, groups, weight="uniform") == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_xauc_matches_torchmetrics_kendall_tau_without_ties(seed):
    # with no tied pair, XAUC = (1 + Kendall tau_a) / 2, globally and inside each group
    rng = np.random.default_rng(700 + seed)
    n = 400
    pred, target = rng.random(n), rng.permutation(n).astype(float)
    tau = kendall_rank_corrcoef(torch.tensor(pred), torch.tensor(target), variant="a").item()
    assert M.xauc(pred, target) == pytest.approx((1 + tau) / 2, abs=1e-6)
    groups = rng.integers(0, 8, n)
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        if m.sum() < 2:
            continue
        pairs = m.sum() * (m.sum() - 1) / 2
        tau_g = kendall_rank_corrcoef(torch.tensor(pred[m]), torch.tensor(target[m]), variant="a").item()
        num += pairs * (1 + tau_g) / 2
        den += pairs
    assert M.grouped_xauc(pred, target, groups) == pytest.approx(num / den, abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_ranking_metrics_match_torchmetrics_without_ties(k):
    # tie-free scores in (0, 1): torchmetrics' own tie rules (NDCG averages tied rows, HR/MRR use an
    # unstable sort) and RetrievalMRR's "score > 0" rule do not come into play
    rng = np.random.default_rng(800 + k)
    n, n_lists = 1200, 100
    scores = rng.random(n)
    labels = rng.integers(0, 4, n) * (rng.random(n) < 0.3)
    groups = rng.integers(0, n_lists, n)
    binary = (labels > 0).astype(np.int64)
    ndcg = tm_retrieval(RetrievalNormalizedDCG(top_k=k, empty_target_action="skip"), scores, labels, groups)
    hr = tm_retrieval(RetrievalHitRate(top_k=k, empty_target_action="skip"), scores, binary, groups)
    mrr = tm_retrieval(RetrievalMRR(empty_target_action="skip"), scores, binary, groups)
    assert M.ndcg_at_k(scores, labels.astype(float), groups, k) == pytest.approx(ndcg, abs=1e-6)
    assert M.hit_rate_at_k(scores, labels, groups, k) == pytest.approx(hr, abs=1e-6)
    assert M.mrr(scores, labels, groups) == pytest.approx(mrr, abs=1e-6)


def test_retrieval_head_matches_torchmetrics():
    # recall@k (= hit rate, one relevant item per query) and ndcg@k of the two-tower head, against
    # torchmetrics over the full query x candidate score matrix
    rng = np.random.default_rng(16)
    n, dim, n_streamers = 300, 8, 40
    streamer = torch.tensor(rng.integers(0, n_streamers, n))
    click = torch.tensor((rng.random(n) < 0.3).astype(np.float32))
    batch = {"streamer": streamer, "label_click": click, "mask_click": torch.ones(n)}
    outputs = {"user_vector": torch.randn(n, dim), "item_vector": torch.randn(n, dim)}
    head = RetrievalHead({"tasks": ["click"]}, cutoffs=[1, 5, 20], positive_task="click")
    values = head.metrics(head.collect(outputs, batch))

    ids = torch.unique(streamer)
    candidates = torch.stack([outputs["item_vector"][streamer == s].double().mean(0) for s in ids])
    query = click > 0.5
    scores = outputs["user_vector"][query].double() @ candidates.T  # [queries, candidates]
    target = (streamer[query][:, None] == ids[None, :]).long()
    index = torch.arange(len(scores))[:, None].expand_as(scores)
    for k in (1, 5, 20):
        hr = tm_retrieval(RetrievalHitRate(top_k=k), scores.flatten(), target.flatten(), index.flatten())
        ndcg = tm_retrieval(RetrievalNormalizedDCG(top_k=k), scores.flatten(), target.flatten(), index.flatten())
        assert values[f"recall@{k}/retrieval"] == pytest.approx(hr, abs=1e-6)
        assert values[f"ndcg@{k}/retrieval"] == pytest.approx(ndcg, abs=1e-6)


def test_mae_rmse_torch_float32_and_bfloat16_inputs():
    rng = np.random.default_rng(17)
    pred = rng.normal(size=2000).astype(np.float32)
    target = np.round(rng.normal(size=2000), 1).astype(np.float32)
    p64, t64 = pred.astype(np.float64), target.astype(np.float64)
    assert M.mae(torch.tensor(pred), torch.tensor(target)) == pytest.approx(
        mean_absolute_error(t64, p64), rel=1e-12)
    assert M.rmse(pred, target) == pytest.approx(math.sqrt(mean_squared_error(t64, p64)), rel=1e-12)
    pb, tb = torch.tensor(pred).bfloat16(), torch.tensor(target).bfloat16()
    assert M.mae(pb, tb) == pytest.approx(
        mean_absolute_error(tb.double().numpy(), pb.double().numpy()), rel=1e-12)
    assert math.isnan(M.mae([], []))


# ----------------------------------------------------------------------------
# logloss from logits (float64)
# ----------------------------------------------------------------------------


def test_logloss_from_logits_matches_sklearn_and_torch_float64():
    rng = np.random.default_rng(15)
    z = rng.normal(scale=3.0, size=5000)  # |z| < 16.1: no clipping
    labels = rng.integers(0, 2, 5000)
    got = M.logloss(z, labels, logits=True)
    assert got == pytest.approx(log_loss(labels, sigmoid64(z)), rel=1e-9)
    bce = F.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(labels, dtype=torch.float64))
    assert got == pytest.approx(bce.item(), rel=1e-12)
    # float32 logits (as the heads keep them) are read in float64
    z32 = torch.tensor(z, dtype=torch.float32)
    assert M.logloss(z32, labels, logits=True) == pytest.approx(
        F.binary_cross_entropy_with_logits(z32.double(), torch.tensor(labels, dtype=torch.float64)).item(),
        rel=1e-12)


def test_logloss_from_logits_clips_like_probabilities():
    eps = 1e-7
    z = np.array([40.0, -40.0, 18.0, -17.0, 0.3, 16.0])
    y = np.array([0, 1, 1, 0, 1, 0])
    p = np.clip(sigmoid64(z), eps, 1 - eps)
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    assert M.logloss(z, y, logits=True, eps=eps) == pytest.approx(expected, rel=1e-9)
    assert M.logloss(z, y, logits=True) == pytest.approx(M.logloss(p, y), rel=1e-9)
    assert math.isnan(M.logloss([], [], logits=True))
    with pytest.raises(ValueError, match="logits contains NaN"):
        M.logloss([0.1, float("nan")], [0, 1], logits=True)
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.logloss([3.0, -2.0], [0, 2], logits=True)


# ----------------------------------------------------------------------------
# Heads: collect + metrics read logits, so confident rows keep their order
# ----------------------------------------------------------------------------

CONFIDENT = torch.tensor([18.0, 17.0])  # labels 1, 0: a perfect ranking; float32 sigmoid of both is 1.0


def test_float32_sigmoid_ties_confident_logits():
    """The failure the heads avoid: ranking float32 probabilities turns 18 vs 17 into a tie."""
    probs = torch.sigmoid(CONFIDENT)
    assert probs[0] == probs[1] == 1.0
    assert M.auc(probs, [1, 0]) == 0.5
    assert M.auc(CONFIDENT, [1, 0]) == 1.0
    assert M.gauc(CONFIDENT, [1, 0], [0, 0]) == 1.0


def test_ctr_head_scores_logits():
    head = CTRHead({"target_actions": ["click"]}, label="click", bce_weight=1.0, gauc_weight="impressions")
    batch = {"label_action": torch.tensor([[1.0], [0.0]]), "group": torch.tensor([7, 7])}
    values = head.metrics(head.collect({"logit": CONFIDENT.clone()}, batch))
    assert values["auc/click"] == 1.0 and values["gauc/click"] == 1.0
    # both logits lie beyond the clip (p in [1e-7, 1 - 1e-7]): -[log(1 - 1e-7) + log(1e-7)] / 2
    assert values["logloss/click"] == pytest.approx(-(math.log1p(-1e-7) + math.log(1e-7)) / 2, rel=1e-9)


def test_action_outcome_head_scores_logits():
    spec = {"target_actions": ["click", "like"], "time_unit": "seconds"}
    head = ActionOutcomeHead(spec, bce_weight=1.0, time_weight=1.0, gauc_weight="impressions")
    outputs = {"action_logit": torch.stack([CONFIDENT, -CONFIDENT], 1), "action_time": torch.zeros(2, 2)}
    batch = {"label_action": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "label_time": torch.zeros(2, 2),
             "group": torch.tensor([3, 3])}
    values = head.metrics(head.collect(outputs, batch))
    assert values["auc/click"] == values["gauc/click"] == 1.0  # 18 > 17
    assert values["auc/like"] == values["gauc/like"] == 1.0    # -17 > -18


def test_multitask_head_scores_logits():
    head = MultiTaskHead({"tasks": ["click"]}, task_weights={"click": 1.0}, gauc_weight="uniform")
    batch = {"label_click": torch.tensor([1.0, 0.0]), "mask_click": torch.ones(2), "pu_click": torch.zeros(2),
             "group": torch.tensor([5, 5])}
    values = head.metrics(head.collect({"task_logits": CONFIDENT[:, None].clone()}, batch))
    assert values["auc/click"] == values["gauc/click"] == 1.0


def test_staytime_heads_rank_in_float64():
    batch = {"label_staytime": torch.tensor([100.0, 10.0]), "label_long_view": torch.tensor([1.0, 0.0]),
             "group": torch.tensor([0, 0]), "duration_bucket": torch.tensor([1, 1])}
    wlr = WLRStaytimeHead({}, weight=1.0, companion_weight=1.0)
    # WLR staytime = odds of sigmoid(z) (z = 18 vs 17): distinct in float64, both 1e6 * 0.5 in float32
    values = wlr.metrics(wlr.collect({"staytime_logit": CONFIDENT.clone(), "companion_logit": torch.zeros(2)}, batch))
    assert values["xauc/staytime"] == values["user_xauc/staytime"] == 1.0
    values = wlr.metrics(wlr.collect({"staytime_logit": torch.zeros(2), "companion_logit": CONFIDENT.clone()}, batch))
    assert values["auc/long_view"] == values["gauc/long_view"] == 1.0
    table = [[0.0] * 5, [0.0, 1.0, 2.0, 3.0, 4.0]]
    d2q = D2QHead({"staytime_quantiles": table}, weight=1.0)  # long-view score: the logit, not sigmoid(logit)
    values = d2q.metrics(d2q.collect({"staytime_logit": CONFIDENT.clone()}, batch))
    assert values["auc/long_view"] == values["gauc/long_view"] == 1.0
    vr = ValueRegressionHead({}, weight=1.0)
    values = vr.metrics(vr.collect({"staytime_logit": CONFIDENT.clone()}, batch))
    assert values["auc/long_view"] == values["xauc/staytime"] == 1.0


def test_head_definitions_state_logits():
    heads = [CTRHead({"target_actions": ["click"]}, label="click", bce_weight=1.0, gauc_weight="impressions"),
             ActionOutcomeHead({"target_actions": ["click"], "time_unit": "seconds"}, bce_weight=1.0,
                               time_weight=1.0, gauc_weight="impressions"),
             MultiTaskHead({"tasks": ["click"]}, task_weights={"click": 1.0}, gauc_weight="uniform")]
    for head in heads:
        definitions = head.definitions()
        assert M.ON_LOGITS in definitions["auc"] and M.ON_LOGITS in definitions["gauc"]
        assert M.LOGLOSS_FROM_LOGITS in definitions["logloss"]
    assert "never a sigmoid probability" in WLRStaytimeHead({}, 1.0, 1.0).definitions()["auc"]
