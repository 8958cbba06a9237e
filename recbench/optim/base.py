"""The contract between the training step and an optimiser that wants one gradient per task."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch


class TaskAwareOptimizer(torch.optim.Optimizer):
    """A dense optimiser that updates the parameters shared by several tasks from one gradient per task.

    Before each `step()` the training step calls `set_task_gradients({param: grads})` with, for every
    shared parameter, a tensor [T, *param.shape] holding task t's gradient in row t (T = number of
    tasks). The other parameters carry their ordinary summed gradient in `.grad`.

    `task_outputs` names the net outputs whose last axis has one column per task ([B, T]); the
    gradient that reaches the parameters through column t of those outputs is task t's gradient.
    """

    task_outputs: tuple[str, ...]

    def __init__(self, params, defaults: dict, task_outputs: Sequence[str]) -> None:
        if isinstance(task_outputs, str) or not task_outputs or not all(isinstance(n, str) for n in task_outputs):
            raise ValueError(f"task_outputs must be a non-empty list of net output names, got {task_outputs!r}")
        super().__init__(params, defaults)
        self.task_outputs = tuple(task_outputs)
        self._task_grads: dict[torch.Tensor, torch.Tensor] = {}

    def set_task_gradients(self, grads: Mapping[torch.Tensor, torch.Tensor]) -> None:
        """Per-task gradients ([T, *shape]) of the shared parameters, used (and dropped) by the next step."""
        self._task_grads = dict(grads)
