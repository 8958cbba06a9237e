"""Heads for live-streaming recommendation: multi-task ranking (with the Moment label stream's loss
mask and the slow window's PU correction) and two-tower retrieval.

Model outputs read here:
  task_logits [B, T]   one ranking logit per task, in the order of spec["tasks"] (`MultiTaskHead`)
  user_vector [B, H], item_vector [B, H]   retrieval embeddings; score = dot product (`RetrievalHead`)
Batch labels: label_<task> [B] 0/1, mask_<task> [B] (1 = this row trains / is evaluated on the task),
pu_<task> [B] (1 = a slow-window positive that cancels an earlier false negative), `group` [B] the
user (GAUC key), `streamer` [B] the candidate's streamer id (retrieval).
`MultiTaskHead` also reads `ctr` data (a FuxiCTR dataset config with several label columns): there
every row trains and is evaluated on every task (no mask_<task> / pu_<task> keys).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recbench import metrics as M
from recbench.data.schema import CTR, LIVE
from recbench.tasks.base import TaskHead

GAUC_WEIGHTS = ("impressions", "positives", "uniform")


def masked_task_loss(logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor, pu: torch.Tensor) -> torch.Tensor:
    """Mean over the rows with mask 1 of BCE, or of the PU term -[log p - log(1 - p)] on pu rows.

    The PU term (Moment&Cross, slow window) is what a late positive adds on top of the BCE its
    exposure already got as a negative: -log(1-p) - [log p - log(1-p)] = -log p, i.e. it turns the
    false negative into a positive. Masked rows contribute neither value nor gradient.
    """
    bce = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    correction = -(F.logsigmoid(logits) - F.logsigmoid(-logits))
    per_row = torch.where(pu > 0.5, correction, bce)
    per_row = torch.where(mask > 0, per_row, torch.zeros_like(per_row))  # where, not *: no NaN leaks
    return per_row.sum() / mask.sum().clamp(min=1)


class MultiTaskHead(TaskHead):
    """Per-task masked BCE (+ PU correction), weighted; per-task AUC, GAUC, logloss and their means.

    task_weights None: weight 1 for every task of the data."""
    accepts = (LIVE, CTR)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], task_weights: dict[str, float] | None, gauc_weight: str) -> None:
        super().__init__(spec)
        if gauc_weight not in GAUC_WEIGHTS:
            raise ValueError(f"gauc_weight must be one of {GAUC_WEIGHTS}, got {gauc_weight!r}")
        self.tasks = list(spec["tasks"])
        self.masked = CTR.name not in spec.get("schemas", ())  # ctr data: no loss masks, no PU rows
        if task_weights is None:
            task_weights = {task: 1.0 for task in self.tasks}
        if set(task_weights) != set(self.tasks):
            raise ValueError(f"task_weights must name exactly the data's tasks {self.tasks}, got "
                             f"{sorted(task_weights)} (null: 1 for each task)")
        self.task_weights = {task: float(task_weights[task]) for task in self.tasks}
        self.gauc_weight = gauc_weight

    def _row_flags(self, batch, prefix: str, task: str, fill: float) -> torch.Tensor:
        """mask_<task> / pu_<task>, or `fill` on every row for data without them (ctr)."""
        label = batch[f"label_{task}"]
        return batch[f"{prefix}_{task}"] if self.masked else torch.full_like(label, fill)

    def loss(self, outputs, batch):
        logits = outputs["task_logits"]
        return {f"bce_{task}": weight * masked_task_loss(logits[:, k], batch[f"label_{task}"],
                                                          self._row_flags(batch, "mask", task, 1.0),
                                                          self._row_flags(batch, "pu", task, 0.0))
                for k, (task, weight) in enumerate(self.task_weights.items()) if weight}

    def collect(self, outputs, batch):
        stack = lambda prefix: torch.stack([batch[f"{prefix}_{t}"] for t in self.tasks], 1)  # noqa: E731
        mask = stack("mask") if self.masked else torch.ones_like(stack("label"))
        # logits, not float32 sigmoids: those round confident rows to one value (logits 18 and 17 tie)
        return {"logit": outputs["task_logits"].detach().float(), "label": stack("label"),
                "mask": mask, "group": batch["group"]}

    def metrics(self, kept):
        logit, label, mask, group = (kept[k].numpy() for k in ("logit", "label", "mask", "group"))
        out: dict[str, float] = {}
        for k, task in enumerate(self.tasks):
            rows = mask[:, k] > 0
            z, y, g = logit[rows, k], label[rows, k], group[rows]
            out[f"auc/{task}"] = M.auc(z, y)
            out[f"gauc/{task}"] = M.gauc(z, y, g, weight=self.gauc_weight)
            out[f"logloss/{task}"] = M.logloss(z, y, logits=True)
        for name in ("auc", "gauc", "logloss"):
            values = [out[f"{name}/{t}"] for t in self.tasks if out[f"{name}/{t}"] == out[f"{name}/{t}"]]
            out[f"{name}/mean"] = float(np.mean(values)) if values else float("nan")  # over defined values
        return out

    def definitions(self):
        rows = " Computed per task over the rows with mask_<task> = 1."
        return {"auc": M.METRIC_DEFINITIONS["auc"] + M.ON_LOGITS + rows,
                "gauc": M.METRIC_DEFINITIONS["gauc"] + f" Here: grouped by user, weight={self.gauc_weight}."
                        + M.ON_LOGITS + rows,
                "logloss": M.METRIC_DEFINITIONS["logloss"] + M.LOGLOSS_FROM_LOGITS + rows,
                "mean": "Unweighted mean over the tasks of the per-task values (tasks where it is defined)."}


def retrieval_ranks(user: torch.Tensor, positive: torch.Tensor, candidates: torch.Tensor,
                    budget: int = 1 << 24) -> torch.Tensor:
    """1-based rank of candidate `positive[i]` for query `user[i]` among all `candidates` rows, by
    dot product; a tie counts against the positive (rank = #candidates scoring >= the positive).
    Queries go in chunks so that one score matrix holds at most `budget` entries."""
    chunk = max(1, budget // max(1, len(candidates)))
    ranks = [torch.zeros(0, dtype=torch.long)]
    for start in range(0, len(user), chunk):
        scores = user[start:start + chunk] @ candidates.T
        own = scores.gather(1, positive[start:start + chunk, None])
        ranks.append((scores >= own).sum(1))
    return torch.cat(ranks)


def live_retrieval_ranks(kept: dict[str, torch.Tensor], window_minutes: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of each query's clicked streamer among the rooms live at the query's moment, each as it was
    then: the candidates are the streamers with a row in the same `window_minutes` window (Unix-epoch
    grid), each represented by its row read nearest in time to the query (ties: the earlier row), so a
    room's candidate vector carries its content of that moment, not an average over the split. The
    query's own row is its streamer's nearest row. Returns (ranks, pool sizes), one per query."""
    item, streamer = kept["item"].double(), kept["streamer"]
    minute, query_row = kept["minute"].long(), kept["query_row"].nonzero().squeeze(1)
    user = kept["query_user"].double()
    window = torch.div(minute * 60, int(round(window_minutes * 60)), rounding_mode="floor")
    ranks, pools = [torch.zeros(0, dtype=torch.double)], [torch.zeros(0, dtype=torch.long)]
    order = torch.argsort(window[query_row], stable=True)
    for w in torch.unique(window[query_row]):
        rows = (window == w).nonzero().squeeze(1)
        picked = order[window[query_row][order] == w]  # indices into the query arrays
        q_rows = query_row[picked]
        local, slot = torch.unique(streamer[rows], return_inverse=True)
        distance = (minute[rows][None, :] - minute[q_rows][:, None]).abs().double()
        distance = distance + torch.arange(len(rows), dtype=torch.double)[None, :] * 1e-9  # ties: earlier row
        distance[torch.arange(len(q_rows)), torch.searchsorted(rows, q_rows)] = -1.0  # a query's own row
        nearest = torch.full((len(q_rows), len(local)), float("inf"), dtype=torch.double)
        nearest = nearest.scatter_reduce(1, slot.expand(len(q_rows), -1), distance, "amin")
        chosen = distance == nearest.gather(1, slot.expand(len(q_rows), -1))  # one row per (query, streamer)
        scores = torch.where(chosen, user[picked] @ item[rows].T, torch.tensor(float("-inf"), dtype=torch.double))
        own = scores.gather(1, torch.searchsorted(rows, q_rows)[:, None])
        ranks.append((scores >= own).sum(1).double())
        pools.append(torch.full((len(q_rows),), len(local), dtype=torch.long))
    return torch.cat(ranks), torch.cat(pools)


class RetrievalHead(TaskHead):
    """Evaluates a two-tower model: rank the clicked streamer among all streamers of the split.

    Training is the model's own (`aux_loss/retrieval`), so this head has no loss terms.
    """
    accepts = (LIVE,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], cutoffs: Sequence[int], positive_task: str,
                 live_window_minutes: float | None = None) -> None:
        super().__init__(spec)
        if positive_task not in spec["tasks"]:
            raise ValueError(f"positive_task must be one of {list(spec['tasks'])}, got {positive_task!r}")
        if live_window_minutes is not None and live_window_minutes <= 0:
            raise ValueError(f"live_window_minutes must be > 0 or null, got {live_window_minutes}")
        self.cutoffs = [int(k) for k in cutoffs]
        self.positive_task = positive_task
        self.live_window = live_window_minutes

    def loss(self, outputs, batch):
        return {}

    def collect(self, outputs, batch):
        # every row's item vector (to build the candidates), the user vector of query rows only
        task = self.positive_task
        query = (batch[f"label_{task}"] > 0.5) & (batch[f"mask_{task}"] > 0)
        kept = {"item": outputs["item_vector"].detach().float(), "streamer": batch["streamer"],
                "query_user": outputs["user_vector"].detach().float()[query],
                "query_streamer": batch["streamer"][query]}
        if self.live_window is not None:
            kept.update(minute=batch["read_minute"], query_row=query)
        return kept

    def metrics(self, kept):
        item = kept["item"].double()
        streamers, candidate_of_row = torch.unique(kept["streamer"], return_inverse=True)  # sorted ids
        # a streamer's candidate vector: the mean of its item vectors over the split's rows
        sums = torch.zeros(len(streamers), item.shape[1], dtype=item.dtype).index_add_(0, candidate_of_row, item)
        counts = torch.bincount(candidate_of_row, minlength=len(streamers)).clamp(min=1)
        candidates = sums / counts[:, None].to(item.dtype)
        target = torch.searchsorted(streamers, kept["query_streamer"])  # every query row is a split row
        ranks = retrieval_ranks(kept["query_user"].double(), target, candidates).double()
        out = self._at_cutoffs(ranks, "retrieval")
        if self.live_window is not None:
            live_ranks, pool = live_retrieval_ranks(kept, self.live_window)
            out.update(self._at_cutoffs(live_ranks, "retrieval_live"))
            out["candidates/retrieval_live"] = float(pool.double().mean()) if len(pool) else float("nan")
        return out

    def _at_cutoffs(self, ranks: torch.Tensor, name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in self.cutoffs:
            hit = ranks <= k
            gain = torch.where(hit, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))
            out[f"recall@{k}/{name}"] = float(hit.double().mean()) if len(ranks) else float("nan")
            out[f"ndcg@{k}/{name}"] = float(gain.mean()) if len(ranks) else float("nan")
        return out

    def definitions(self):
        setup = (f"Queries: the split's rows with label_{self.positive_task} = 1 (and mask 1); candidates: every "
                 "distinct streamer appearing in the split, each represented by the mean of its rows' item "
                 "vectors; score = dot(user vector of the query row, candidate vector); rank = number of "
                 "candidates scoring >= the clicked streamer (ties count against it), from 1. "
                 "/retrieval_live (with live_window_minutes): candidates are only the streamers with a row in "
                 "the query's live_window_minutes window (the rooms live then), each represented by its row "
                 "read nearest in time to the query (its content of that moment); candidates/retrieval_live "
                 "is the mean pool size.")
        return {"recall@k": "Retrieval Recall@k: share of queries whose clicked streamer has rank <= k (one "
                            "relevant item per query, so it equals HitRate@k). " + setup,
                "ndcg@k": "Retrieval NDCG@k: mean over queries of 1/log2(rank + 1) if rank <= k else 0 (one "
                          "relevant item, ideal DCG = 1). " + setup}
