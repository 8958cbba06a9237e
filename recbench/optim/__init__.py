"""Optimisers beyond torch's own, and the per-task gradient split that task-aware ones need.

- `adatask.AdaTask`: Adam with separate moment estimates per task for the parameters several tasks
  share (Yang et al., AAAI 2023); `conf/optimizer/adatask.yaml`.
- `task_split.TaskGradientSplit`: one gradient per task for the shared parameters, found from the
  net's per-task outputs, with no change to the net or the task heads (used by recbench/module.py).

A dense optimiser is task-aware when it subclasses `TaskAwareOptimizer`: the training step then hands
it per-task gradients of the shared parameters instead of one summed gradient.
"""

from recbench.optim.base import TaskAwareOptimizer

__all__ = ["TaskAwareOptimizer"]
