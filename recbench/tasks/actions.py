"""Heads for action-type targets: did each action happen, after how long, and in which order.

Model outputs read here (every model on an action dataset provides the first two):
  action_logit [B, K]  one logit per target action (K = len(spec["target_actions"]))
  action_time  [B, K]  predicted delay of each action, in spec["time_unit"]
  step_logits  [B, S, K+1], step_time [B, S]  generated sequence (class 0 = exit, k+1 = action k)
  aux_step_logits, aux_step_time              optional pre-refinement predictions (auxiliary loss)
Batch labels: label_action [B, K] 0/1, label_time [B, K], label_seq [B, S] tokens (0 pad, 1 exit,
k+2 action k), label_seq_time [B, S]; `group` [B] is the GAUC group key (the user).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recbench import metrics as M
from recbench.data.schema import ACTIONS
from recbench.tasks.base import TaskHead

GAUC_WEIGHTS = ("impressions", "positives", "uniform")


class ActionOutcomeHead(TaskHead):
    """Per action: binary outcome (BCE) and delay on positives (MSE); AUC/GAUC/logloss/MAE."""
    accepts = (ACTIONS,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], bce_weight: float, time_weight: float, gauc_weight: str) -> None:
        super().__init__(spec)
        if gauc_weight not in GAUC_WEIGHTS:
            raise ValueError(f"gauc_weight must be one of {GAUC_WEIGHTS}, got {gauc_weight!r}")
        self.actions = list(spec["target_actions"])
        self.bce_weight, self.time_weight, self.gauc_weight = bce_weight, time_weight, gauc_weight

    def loss(self, outputs, batch):
        terms = {}
        labels = batch["label_action"]
        if self.bce_weight:
            bce = F.binary_cross_entropy_with_logits(outputs["action_logit"], labels)
            terms["outcome_bce"] = self.bce_weight * bce
        if self.time_weight:
            error = (outputs["action_time"] - batch["label_time"]) ** 2
            terms["outcome_time_mse"] = self.time_weight * (error * labels).sum() / labels.sum().clamp(min=1)
        return terms

    def collect(self, outputs, batch):
        # logits, not float32 sigmoids: those round confident rows to one value (logits 18 and 17 tie)
        return {"logit": outputs["action_logit"].detach().float(),
                "time": outputs["action_time"].detach().float(), "label": batch["label_action"],
                "label_time": batch["label_time"], "group": batch["group"]}

    def metrics(self, kept):
        logit, label = kept["logit"].numpy(), kept["label"].numpy()
        time, label_time, group = kept["time"].numpy(), kept["label_time"].numpy(), kept["group"].numpy()
        out: dict[str, float] = {}
        for k, action in enumerate(self.actions):
            positive = label[:, k] > 0.5
            out[f"auc/{action}"] = M.auc(logit[:, k], label[:, k])
            out[f"gauc/{action}"] = M.gauc(logit[:, k], label[:, k], group, weight=self.gauc_weight)
            out[f"logloss/{action}"] = M.logloss(logit[:, k], label[:, k], logits=True)
            out[f"time_mae/{action}"] = M.mae(time[:, k], label_time[:, k], mask=positive)
        for name in ("auc", "gauc", "logloss", "time_mae"):
            values = [out[f"{name}/{a}"] for a in self.actions if out[f"{name}/{a}"] == out[f"{name}/{a}"]]
            out[f"{name}/mean"] = float(np.mean(values)) if values else float("nan")  # over defined values
        return out

    def definitions(self):
        return {"auc": M.METRIC_DEFINITIONS["auc"] + M.ON_LOGITS,
                "gauc": M.METRIC_DEFINITIONS["gauc"] + f" Here: grouped by user, weight={self.gauc_weight}."
                        + M.ON_LOGITS,
                "logloss": M.METRIC_DEFINITIONS["logloss"] + M.LOGLOSS_FROM_LOGITS,
                "time_mae": "Mean absolute error of the predicted delay of an action, over the episodes "
                            f"where that action happened, in {self.spec['time_unit']}.",
                "mean": "Unweighted mean over the target actions of the per-action values."}


class ActionSequenceHead(TaskHead):
    """Generated action sequence: step cross-entropy, step-time MSE, auxiliary and time-order terms."""
    accepts = (ACTIONS,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], ce_weight: float, time_weight: float, aux_ce_weight: float,
                 aux_time_weight: float, order_weight: float) -> None:
        super().__init__(spec)
        self.ce_weight, self.time_weight = ce_weight, time_weight
        self.aux_ce_weight, self.aux_time_weight = aux_ce_weight, aux_time_weight
        self.order_weight = order_weight

    @staticmethod
    def _ce_and_mse(logits, times, batch) -> tuple[torch.Tensor, torch.Tensor]:
        target = batch["label_seq"] - 1  # class 0 = exit, k + 1 = action k; padding becomes -1
        ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-1)
        valid = (target >= 0).float()
        mse = (((times - batch["label_seq_time"]) ** 2) * valid).sum() / valid.sum().clamp(min=1)
        return ce, mse

    def loss(self, outputs, batch):
        ce, mse = self._ce_and_mse(outputs["step_logits"], outputs["step_time"], batch)
        terms = {"seq_ce": self.ce_weight * ce, "seq_time_mse": self.time_weight * mse}
        if "aux_step_logits" in outputs and (self.aux_ce_weight or self.aux_time_weight):
            aux_ce, aux_mse = self._ce_and_mse(outputs["aux_step_logits"], outputs["aux_step_time"], batch)
            terms.update(seq_aux_ce=self.aux_ce_weight * aux_ce, seq_aux_time_mse=self.aux_time_weight * aux_mse)
        if self.order_weight:
            terms["seq_time_order"] = self.order_weight * time_order_penalty(
                outputs["step_logits"], outputs["step_time"])
        return terms

    def collect(self, outputs, batch):
        predicted = outputs["step_logits"].detach().argmax(-1) + 1  # back to tokens
        return {"pred": predicted, "label": batch["label_seq"],
                "exit_time": outputs["step_time"].detach().float(), "label_time": batch["label_seq_time"]}

    def metrics(self, kept):
        label, pred = kept["label"], kept["pred"]
        valid = label > 0
        exact = ((pred == label) | ~valid).all(1).float().mean().item()
        exit_step = (label == 1).float().argmax(1)  # token 1 = exit
        rows = torch.arange(len(label))
        exit_mae = M.mae(kept["exit_time"][rows, exit_step], kept["label_time"][rows, exit_step])
        return {"exact_match/sequence": exact, "exit_time_mae/sequence": exit_mae}

    def definitions(self):
        return {"exact_match": "Share of episodes whose greedy step-wise predicted tokens equal the "
                                   "true action sequence up to and including exit.",
                "exit_time_mae": "Mean absolute error of the predicted exit time at the true exit step."}


def time_order_penalty(step_logits: torch.Tensor, step_time: torch.Tensor) -> torch.Tensor:
    """Hinge on decreasing predicted times, counted up to (and including) the first predicted exit."""
    decrease = F.relu(step_time[:, :-1] - step_time[:, 1:])  # step i -> i + 1
    is_exit = step_logits.detach().argmax(-1) == 0
    before_exit = (is_exit.long().cumsum(1) - is_exit.long()) == 0  # steps up to the first exit
    active = before_exit[:, 1:].float()
    return (decrease * active).sum() / step_time.shape[0]
