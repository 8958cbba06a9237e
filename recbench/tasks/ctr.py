"""Binary CTR-style target: one 0/1 label per sample, scored from one logit.

Model output read here: `logit` [B] (DIN, DeepFM, ...).
Label: column `label` of `batch["label_action"]` [B, K], `label` one of spec["target_actions"] of
the `actions` schema (on Tmall, `label=purchase`: "does this (user, item) episode end in a purchase
within the label horizon"). `group` [B] is the GAUC group key (the user).
On `ctr` data (a FuxiCTR dataset config): `label` is one of spec["tasks"] (the label columns; None:
the first, as FuxiCTR's single-task models), read from `batch["label_<label>"]` [B], and the model's
logit is that label's column of `task_logits` [B, T].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from recbench import metrics as M
from recbench.data.schema import ACTIONS, CTR
from recbench.tasks.actions import GAUC_WEIGHTS
from recbench.tasks.base import TaskHead


class CTRHead(TaskHead):
    """Binary cross-entropy on `logit`; exact AUC, GAUC and logloss over the whole split."""
    accepts = (ACTIONS, CTR)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], label: str | None, bce_weight: float, gauc_weight: str) -> None:
        super().__init__(spec)
        if gauc_weight not in GAUC_WEIGHTS:
            raise ValueError(f"gauc_weight must be one of {GAUC_WEIGHTS}, got {gauc_weight!r}")
        self.ctr = CTR.name in spec.get("schemas", ())
        actions = list(spec["tasks"] if self.ctr else spec["target_actions"])
        if label is None and self.ctr:
            label = actions[0]
        if label not in actions:
            # KeyError: the CLI turns it into "this task does not fit this dataset"
            raise KeyError(f"label '{label}' (its target actions: {', '.join(actions)})")
        self.label, self.column = label, actions.index(label)
        self.bce_weight, self.gauc_weight = bce_weight, gauc_weight

    def target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch[f"label_{self.label}"] if self.ctr else batch["label_action"][:, self.column]

    def logit(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return outputs["task_logits"][:, self.column] if self.ctr else outputs["logit"]

    def batch_keys(self) -> set[str]:
        return {f"label_{self.label}" if self.ctr else "label_action", "group"}

    def loss(self, outputs, batch):
        bce = F.binary_cross_entropy_with_logits(self.logit(outputs), self.target(batch))
        return {"ctr_bce": self.bce_weight * bce}

    def collect(self, outputs, batch):
        # the logit, not a float32 sigmoid: that rounds confident rows to one value (logits 18 and 17 tie)
        return {"logit": self.logit(outputs).detach().float(), "label": self.target(batch), "group": batch["group"]}

    def metrics(self, kept):
        logit, label, group = kept["logit"].numpy(), kept["label"].numpy(), kept["group"].numpy()
        return {f"auc/{self.label}": M.auc(logit, label),
                f"gauc/{self.label}": M.gauc(logit, label, group, weight=self.gauc_weight),
                f"logloss/{self.label}": M.logloss(logit, label, logits=True)}

    def definitions(self):
        return {"auc": M.METRIC_DEFINITIONS["auc"] + M.ON_LOGITS,
                "gauc": M.METRIC_DEFINITIONS["gauc"] + f" Here: grouped by user, weight={self.gauc_weight}."
                        + M.ON_LOGITS,
                "logloss": M.METRIC_DEFINITIONS["logloss"] + M.LOGLOSS_FROM_LOGITS,
                "ctr_label": f"Binary target '{self.label}': 1 if that action happened (dataset's label "
                             "definition), else 0."}
