"""AdaTask: Adam with task-wise accumulated gradients for the parameters that tasks share.

Source: E. Yang, J. Pan, X. Wang, H. Yu, L. Shen, X. Chen, L. Xiao, J. Jiang, G. Guo, "AdaTask: A
Task-Aware Adaptive Learning Rate Approach to Multi-Task Learning", AAAI 2023 (arXiv 2211.15055), and
the authors' Adam variant (github.com/EnnengYang/AdaTask, adatask.py, commit 422011a).

Plain Adam keeps one first moment m and one second moment v per parameter, built from the summed
gradient of all tasks, so a task with large gradients sets the learning rate of every shared
parameter. AdaTask keeps them per task. For a shared parameter theta and task t with gradient g_t:

    m_t <- b1 m_t + (1 - b1) g_t
    v_t <- b2 v_t + (1 - b2) g_t^2
    theta <- theta - lr / (1 - b1^s) * sum_t  m_t / (sqrt(v_t / (1 - b2^s)) + eps)

(s = the step count), i.e. the sum over tasks of each task's own bias-corrected Adam step. A
parameter only one task reaches (a task tower) gets plain Adam on its gradient, which is the same
formula with one task. Weight decay (not used in the paper) is L2 added to the gradient as in
torch.optim.Adam; for a shared parameter it is split evenly over the tasks, so the per-task
gradients still add up to the gradient of the decayed loss.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from recbench.optim.base import TaskAwareOptimizer


class AdaTask(TaskAwareOptimizer):
    def __init__(self, params, lr: float, betas: Sequence[float], eps: float, weight_decay: float,
                 task_outputs: Sequence[str]) -> None:
        if not lr > 0:
            raise ValueError(f"AdaTask: lr must be positive, got {lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdaTask: betas must be two numbers in [0, 1), got {list(betas)}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"AdaTask: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        defaults = dict(lr=float(lr), betas=(float(betas[0]), float(betas[1])), eps=float(eps),
                        weight_decay=float(weight_decay))
        super().__init__(params, defaults, task_outputs)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        task_grads, self._task_grads = self._task_grads, {}
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                grads = task_grads.get(param)
                if grads is None:
                    if param.grad is None:
                        continue
                    if param.grad.is_sparse:
                        raise RuntimeError("AdaTask takes dense gradients; sparse embedding tables belong to "
                                           "the sparse optimiser (optimizer.sparse)")
                    grads = param.grad.unsqueeze(0)  # one task: plain Adam
                if decay:
                    grads = grads + (decay / len(grads)) * param
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(grads, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(grads, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if exp_avg.shape != grads.shape:
                    raise RuntimeError(f"AdaTask: a parameter of shape {tuple(param.shape)} was updated with "
                                       f"{len(exp_avg)} task gradient(s) before and gets {len(grads)} now")
                state["step"] += 1
                step = state["step"]
                exp_avg.mul_(beta1).add_(grads, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add_(eps)
                step_size = lr / (1 - beta1 ** step)
                for task in range(len(grads)):  # sum over tasks of each task's Adam step
                    param.addcdiv_(exp_avg[task], denom[task], value=-step_size)
        return loss
