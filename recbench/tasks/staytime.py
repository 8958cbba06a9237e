"""Heads for a staytime target (seconds spent somewhere) and for ranking the comments shown with it.

Model outputs read here:
  staytime_logit [B]   main output: a WLR logit (`WLRStaytimeHead`) or log1p-seconds (`ValueRegressionHead`)
  companion_logit [B]  WLR only: a plain (unweighted) long-view classifier, used to decode staytime
  comment_user_logits [B, K], comment_agnostic_logits [B, K]  per shown comment (`CommentRankingHead`)
Batch labels: label_staytime [B] seconds, label_long_view [B] 0/1, label_clicked [B, K] 0/1,
label_comment_score [B, K] (user-agnostic quality), comments_mask [B, K]; `group` [B] is the user;
duration_bucket [B] (D2Q only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recbench import metrics as M
from recbench.data.schema import COMMENTS, STAYTIME
from recbench.tasks.base import TaskHead

RANK_CUTOFFS = (1, 3, 5)


def staytime_metrics(pred: np.ndarray, staytime: np.ndarray, long_view: np.ndarray, score: np.ndarray,
                     group: np.ndarray) -> dict[str, float]:
    """Regression (MAE, RMSE, XAUC global and per user), long-view ranking (AUC, GAUC) and the authors'
    per-user video ranking (nDCG@1/3/5, MRR: each user's impressions ranked by score, relevance = long view)."""
    out = {"mae/staytime": M.mae(pred, staytime), "rmse/staytime": M.rmse(pred, staytime),
           "xauc/staytime": M.xauc(pred, staytime),
           "user_xauc/staytime": M.grouped_xauc(pred, staytime, group, weight="pairs"),
           "auc/long_view": M.auc(score, long_view), "gauc/long_view": M.gauc(score, long_view, group)}
    out.update({f"ndcg@{k}/video_per_user": M.ndcg_at_k(score, long_view, group, k) for k in RANK_CUTOFFS})
    out["mrr/video_per_user"] = M.mrr(score, long_view, group)
    return out


_SCORE = ("the head's long-view score, a logit or raw value in float64 (WLR: the companion logit; VR: the "
          "regressed log1p-seconds; D2Q: the percentile logit), never a sigmoid probability")
_PER_USER = (" Here (video_per_user, the LCU authors' 'relevance ranking'): one list per user = all of the "
             "user's impressions in the split, relevance = the long-view label (KuaiComt: staytime above the "
             "data.long_view_quantile of training staytimes, 0.7 as the authors' long_view2), ranked by " + _SCORE
             + "; users without a long view are skipped.")

STAYTIME_DEFINITIONS = {
    "mae": "Mean absolute error of the predicted staytime, seconds.",
    "rmse": "Root mean squared error of the predicted staytime, seconds.",
    "xauc": M.METRIC_DEFINITIONS["xauc"] + " Here: on the predicted staytime, decoded in float64.",
    "user_xauc": "XAUC over pairs of the same user only, pooled over users (weight = pairs); predicted staytime "
                 "decoded in float64.",
    "auc": M.METRIC_DEFINITIONS["auc"] + " Here: the long-view label scored by " + _SCORE + ".",
    "gauc": M.METRIC_DEFINITIONS["gauc"] + " Here: grouped by user, weight = impressions, scored as for auc.",
    # keyed by name/target: LCU's comment head defines ndcg@k and mrr for its own lists
    "ndcg@k/video_per_user": M.METRIC_DEFINITIONS["ndcg@k"] + _PER_USER + " Gain: linear (0/1).",
    "mrr/video_per_user": M.METRIC_DEFINITIONS["mrr"] + _PER_USER,
}


class _StaytimeHead(TaskHead):
    accepts = (STAYTIME,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def collect(self, outputs, batch):
        # Decode in float64: in float32 sigmoid(z) rounds to 1 above z ~ 17, so the WLR odds of confident
        # rows would tie and XAUC would see ties the model did not make (ranking metrics read float64).
        wide = {k: v.detach().double() for k, v in outputs.items() if k in ("staytime_logit", "companion_logit")}
        prediction, score = self.decode(wide, batch)
        return {"pred": prediction, "score": score,
                "staytime": batch["label_staytime"], "long_view": batch["label_long_view"], "group": batch["group"]}

    def decode(self, outputs, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(staytime in seconds, long-view ranking score)."""
        raise NotImplementedError

    def metrics(self, kept):
        return staytime_metrics(*(kept[k].numpy() for k in ("pred", "staytime", "long_view", "score", "group")))

    def definitions(self):
        return STAYTIME_DEFINITIONS


class WLRStaytimeHead(_StaytimeHead):
    """Weighted logistic regression (YouTube-style) plus a companion classifier for decoding.

    Loss: BCE(z, long_view) with weight max(staytime, 1) (so the odds of z track staytime), plus an
    unweighted BCE for the companion logit z_c. Decoding (as in the LCU code):
    staytime = sigmoid(z) / (1 - sigmoid(z) + 1e-6) * (1 - sigmoid(z_c)).
    """

    def __init__(self, spec: dict[str, Any], weight: float, companion_weight: float) -> None:
        super().__init__(spec)
        self.weight, self.companion_weight = weight, companion_weight

    def loss(self, outputs, batch):
        label = batch["label_long_view"]
        sample_weight = batch["label_staytime"].clamp(min=1.0)
        main = F.binary_cross_entropy_with_logits(outputs["staytime_logit"], label, weight=sample_weight)
        companion = F.binary_cross_entropy_with_logits(outputs["companion_logit"], label)
        return {"wlr": self.weight * main, "wlr_companion": self.companion_weight * companion}

    def decode(self, outputs, batch):
        p = torch.sigmoid(outputs["staytime_logit"])
        negative = 1 - torch.sigmoid(outputs["companion_logit"])
        return p / (1 - p + 1e-6) * negative, outputs["companion_logit"]


class ValueRegressionHead(_StaytimeHead):
    """VR: regress log1p(staytime) with MSE; the prediction is expm1 of the output."""

    def __init__(self, spec: dict[str, Any], weight: float) -> None:
        super().__init__(spec)
        self.weight = weight

    def loss(self, outputs, batch):
        target = torch.log1p(batch["label_staytime"])
        return {"vr_mse": self.weight * F.mse_loss(outputs["staytime_logit"], target)}

    def decode(self, outputs, batch):
        value = outputs["staytime_logit"]
        return torch.expm1(value.clamp(min=0)), value


class D2QHead(_StaytimeHead):
    """D2Q (duration-deconfounded quantile, Zhan et al. KDD 2022): regress the percentile of the staytime
    among training samples of the same duration bucket (removes the duration bias), decode it back to
    seconds through that bucket's percentile table.

    The table (`spec["staytime_quantiles"]`, built by `recbench.data.kuaicomt.duration_quantiles`) holds,
    per bucket, the training staytime at the L evenly spaced levels 0, 1/(L-1), ..., 1 (numpy's linear
    quantiles: the sample of rank r among n sits at level (r-1)/(n-1)). A staytime shared by many samples
    (0 s for every impression whose comment section stayed closed: most rows) fills a run of equal entries.

    Label (mid-rank percentile): a staytime equal to a table value gets the middle of the levels its run
    covers, i.e. tied samples share the average of their ranks (0 s at 87% of a bucket -> about 0.435,
    not 0); a staytime between two table values gets the level linearly interpolated between them; below
    the first / above the last value: 0 / 1. Resolution: half a level step (0.005 at L=101) on a tie.
    Decoding (mid-quantile): each distinct table value is a knot at its label; a predicted percentile q
    decodes to the staytime linearly interpolated between the knots around it (clamped to the first / last
    value outside them). This is strictly increasing between the first and last knot, so predictions keep
    the model's order: with plain quantile decoding every q inside the run of zeros decodes to 0 and the
    predictions collapse to one value on a zero-inflated target. Decoding a table value's label returns it.
    """

    def __init__(self, spec: dict[str, Any], weight: float) -> None:
        super().__init__(spec)
        self.weight = weight
        table = torch.tensor(spec["staytime_quantiles"], dtype=torch.float64)  # [buckets, L], rows ascending
        if table.ndim != 2 or table.shape[1] < 2 or bool((table.diff(dim=1) < 0).any()):
            raise ValueError("spec['staytime_quantiles'] must be [buckets, levels >= 2] with ascending rows")
        step = 1.0 / (table.shape[1] - 1)
        first = torch.searchsorted(table, table, right=False)      # first column of each entry's run
        last = torch.searchsorted(table, table, right=True) - 1    # last column of that run
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("knots", (first + last).double() * step / 2, persistent=False)  # mid-rank level
        self.step = step

    def percentile(self, staytime: torch.Tensor, bucket: torch.Tensor) -> torch.Tensor:
        """Mid-rank percentile of each staytime within its duration bucket (float64)."""
        rows = self.table[bucket]
        size = rows.shape[1]
        s = staytime.to(rows.dtype).unsqueeze(1).contiguous()
        below = torch.searchsorted(rows, s, right=False)   # table entries < s
        upto = torch.searchsorted(rows, s, right=True)     # table entries <= s
        tied = (below + upto - 1).double() * self.step / 2
        left, right = (below - 1).clamp(0, size - 1), below.clamp(0, size - 1)
        x0, x1 = rows.gather(1, left), rows.gather(1, right)
        frac = ((s - x0) / (x1 - x0).clamp(min=1e-12)).clamp(0, 1)
        between = (left.double() + frac) * self.step
        level = torch.where(upto > below, tied, torch.where(below == 0, 0.0, torch.where(below == size, 1.0, between)))
        return level.squeeze(1)

    def loss(self, outputs, batch):
        logit = outputs["staytime_logit"]
        target = self.percentile(batch["label_staytime"], batch["duration_bucket"]).to(logit.dtype)
        return {"d2q_mse": self.weight * F.mse_loss(torch.sigmoid(logit), target)}

    def decode(self, outputs, batch):
        logit = outputs["staytime_logit"]
        q = torch.sigmoid(logit.double()).unsqueeze(1).contiguous()
        rows, knots = self.table[batch["duration_bucket"]], self.knots[batch["duration_bucket"]]
        size = rows.shape[1]
        after = torch.searchsorted(knots, q, right=True)   # first knot above q
        left, right = (after - 1).clamp(0, size - 1), after.clamp(0, size - 1)
        k0, k1 = knots.gather(1, left), knots.gather(1, right)
        frac = torch.where(k1 > k0, (q - k0) / (k1 - k0).clamp(min=1e-12), torch.zeros_like(q)).clamp(0, 1)
        v0, v1 = rows.gather(1, left), rows.gather(1, right)
        # long-view score: the logit itself (same order as q, but no sigmoid rounding confident rows to a tie)
        return (v0 + (v1 - v0) * frac).squeeze(1), logit


def list_mle(logits: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ListMLE (Xia et al. 2008): -log P(true order | logits) under the Plackett-Luce model.

    The true order sorts valid items by `scores` descending; masked items take no part.
    """
    order = torch.argsort(scores.masked_fill(~mask, float("-inf")), dim=1, descending=True, stable=True)
    ranked = torch.gather(logits.masked_fill(~mask, float("-inf")), 1, order)
    valid = torch.gather(mask, 1, order)
    # log-sum-exp over each suffix ranked[i:], via a cumulative logsumexp of the reversed rows
    suffix = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)
    terms = torch.where(valid, suffix - ranked, torch.zeros_like(ranked))
    lists = valid.sum(1) > 1
    return terms[lists].sum() / lists.sum().clamp(min=1)


class CommentRankingHead(TaskHead):
    """Two comment-ranking targets over the K shown comments.

    user-specific: which comments this user liked or replied to (BCE on logits, only impressions
    with at least one interaction, as in the LCU code). user-agnostic: the comments' popularity
    order (ListMLE on logits). The LCU code applies both losses to softmax outputs; we apply them to
    logits, where the losses are defined (documented deviation).
    """
    accepts = (COMMENTS,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], user_specific_weight: float, user_agnostic_weight: float) -> None:
        super().__init__(spec)
        self.user_specific_weight, self.user_agnostic_weight = user_specific_weight, user_agnostic_weight

    def loss(self, outputs, batch):
        mask, clicked = batch["comments_mask"], batch["label_clicked"]
        terms = {}
        if self.user_specific_weight:
            rows = clicked.sum(1) > 0
            logits = outputs["comment_user_logits"][rows]
            bce = F.binary_cross_entropy_with_logits(logits, clicked[rows], weight=mask[rows].float(),
                                                     reduction="sum") / mask[rows].sum().clamp(min=1)
            terms["comment_user_bce"] = self.user_specific_weight * bce
        if self.user_agnostic_weight:
            terms["comment_agnostic_listmle"] = self.user_agnostic_weight * list_mle(
                outputs["comment_agnostic_logits"], batch["label_comment_score"], mask)
        return terms

    def collect(self, outputs, batch):
        return {"user": outputs["comment_user_logits"].detach().float(),
                "agnostic": outputs["comment_agnostic_logits"].detach().float(),
                "clicked": batch["label_clicked"], "score": batch["label_comment_score"],
                "mask": batch["comments_mask"]}

    def metrics(self, kept):
        mask = kept["mask"].numpy()
        lists = np.broadcast_to(np.arange(mask.shape[0])[:, None], mask.shape)[mask]
        user, clicked = kept["user"].numpy()[mask], kept["clicked"].numpy()[mask]
        agnostic, score = kept["agnostic"].numpy()[mask], kept["score"].numpy()[mask]
        out = {f"ndcg@{k}/comment_user": M.ndcg_at_k(user, clicked, lists, k) for k in RANK_CUTOFFS}
        out["mrr/comment_user"] = M.mrr(user, clicked, lists)
        out.update({f"ndcg@{k}/comment_agnostic": M.ndcg_at_k(agnostic, score, lists, k) for k in RANK_CUTOFFS})
        return out

    def definitions(self):
        return {"ndcg@k": M.METRIC_DEFINITIONS["ndcg@k"] + " comment_user: per impression, relevance = the "
                          "user liked/replied; comment_agnostic: graded relevance = log1p(likes)+log1p(replies).",
                "mrr": M.METRIC_DEFINITIONS["mrr"]}
