"""The contract between the generic training loop and a prediction target."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TaskHead(nn.Module):
    """One prediction target: its loss terms, what to keep per batch, its epoch metrics.

    The training loop sums `loss(...)` over heads, concatenates `collect(...)` over an evaluation
    epoch and calls `metrics(...)` once on the whole split, so grouped metrics see whole groups.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named, already weighted loss terms (an empty dict when the head only evaluates)."""
        raise NotImplementedError

    def collect(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detached tensors to keep for this batch (predictions, labels, group keys)."""
        raise NotImplementedError

    def metrics(self, kept: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics over a whole split from the concatenated `collect` outputs."""
        raise NotImplementedError

    def definitions(self) -> dict[str, str]:
        """Written definitions of the metrics this head reports (go into every results record)."""
        return {}
