"""One gradient per task for the parameters several tasks share, without touching the net or the heads.

What a task's gradient is here: a multi-task net returns per-task outputs whose last axis has one
column per task (`action_logit` [B, K], `task_logits` [B, T], ...; the optimiser's `task_outputs`
names them). The heads compute the loss from detached copies of the outputs, so the loss gradient
with respect to the outputs comes from the heads alone. Task t's gradient of a parameter is the part
of the loss gradient that flows back through column t: the vector-Jacobian product of the net with
that output gradient zeroed outside column t. The task gradients add up to
the full gradient exactly (the columns partition the output gradient), and when the loss is a sum of
per-task terms, as the heads' per-task BCE and delay MSE are, task t's gradient is the gradient of
task t's own term.

Which parameters are shared: those that more than one task's column reaches. This is found once, on
the first training batch, by back-propagating a column of ones per task (structure, not the batch's
labels: a task with no positive in that batch still counts) and keeping the parameters with a
non-zero gradient from two or more tasks. MMoE's experts and input encoder, and PLE's shared experts
and, through the shared gate of the lower levels, its lower task experts, come out shared; towers and
task gates come out task-specific. Sparse id tables are left to the sparse optimiser with the summed
gradient.

Cost per step: the ordinary backward for the task-specific parameters and sparse tables, plus one
backward per task to the shared parameters; with 3 tasks an MMoE / PLE training step on CPU takes
about 2-2.5x as long as under Adam (summing the rest's gradients from the task passes instead, or
one vmap-batched pass over the tasks, measured no faster).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from recbench.errors import UserInputError

WHAT = "optimizer=adatask"  # the user-facing name of the task-aware path in error lines


def _column(grad: torch.Tensor, task: int) -> torch.Tensor:
    """`grad` with every column of the last axis but `task` set to zero."""
    out = torch.zeros_like(grad)
    out[..., task] = grad[..., task]
    return out


class TaskGradientSplit:
    def __init__(self, task_outputs: Sequence[str], dense: Sequence[nn.Parameter],
                 sparse: Sequence[nn.Parameter]) -> None:
        self.task_outputs = tuple(task_outputs)
        self.dense, self.sparse = list(dense), list(sparse)
        self.shared: list[nn.Parameter] | None = None  # set on the first batch
        self.specific: list[nn.Parameter] = []
        self.n_tasks: int | None = None

    # ------------------------------------------------------------------ outputs
    def task_tensors(self, outputs: Mapping[str, torch.Tensor]) -> tuple[list[str], list[torch.Tensor], int]:
        names = [name for name in self.task_outputs if name in outputs]
        if not names:
            raise UserInputError(f"{WHAT} splits gradients by task along the last axis of the net outputs "
                                 f"{list(self.task_outputs)} (optimizer.dense.task_outputs), and this net returns none "
                                 f"of them (it returns {sorted(outputs)}). Fix: name the net's per-task outputs "
                                 "there, or use optimizer=adam")
        tensors = [outputs[name] for name in names]
        widths = {name: tuple(t.shape) for name, t in zip(names, tensors)}
        if any(t.dim() != 2 for t in tensors) or len({t.shape[-1] for t in tensors}) != 1:
            raise UserInputError(f"{WHAT}: the task outputs must all be [batch, tasks] with the same number of "
                                 f"tasks; got shapes {widths}. Fix: list only per-task outputs in "
                                 "optimizer.dense.task_outputs")
        n_tasks = tensors[0].shape[-1]
        if n_tasks < 2:
            raise UserInputError(f"{WHAT} needs at least two tasks; the net's task outputs {names} have "
                                 f"{n_tasks} column. Fix: use optimizer=adam for a single task")
        if self.n_tasks is not None and n_tasks != self.n_tasks:
            raise UserInputError(f"{WHAT}: the net's task outputs had {self.n_tasks} columns and now have {n_tasks}")
        return names, tensors, n_tasks

    @staticmethod
    def detached(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The net's outputs as leaves of their own graph, for the heads to compute the loss from: the
        loss gradient then stops at the outputs, and the net's graph is walked once per task."""
        return {name: value.detach().requires_grad_() if torch.is_tensor(value) and value.requires_grad else value
                for name, value in outputs.items()}

    def output_gradients(self, outputs: Mapping[str, torch.Tensor], read: Mapping[str, torch.Tensor],
                         loss: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        """(task output tensors of the net, d loss / d each of them, number of tasks), where `loss` was
        computed from `read` = `detached(outputs)`. Refuses a loss that also reads an output with no
        task axis (an auxiliary loss, a shared embedding): its gradient belongs to no one task."""
        names, tensors, n_tasks = self.task_tensors(outputs)
        leaves = {name: value for name, value in read.items() if torch.is_tensor(value) and value.requires_grad}
        order = [name for name in names if name in leaves] + [name for name in leaves if name not in names]
        found = dict(zip(order, torch.autograd.grad(loss, [leaves[n] for n in order], allow_unused=True)))
        for name in order:
            if name not in names and found[name] is not None:
                raise UserInputError(f"{WHAT}: the training loss also reads the net output '{name}', which has no "
                                     "task axis, so its gradient cannot be given to one task. Fix: add it to "
                                     "optimizer.dense.task_outputs if its last axis has one column per task, or "
                                     "use optimizer=adam")
        grads = [torch.zeros_like(t) if found.get(n) is None else found[n] for n, t in zip(names, tensors)]
        return tensors, grads, n_tasks

    # ------------------------------------------------------------------ shared parameters
    def detect(self, tensors: list[torch.Tensor], n_tasks: int) -> None:
        """Shared = reached by the columns of two or more tasks (a column of ones per task)."""
        reached = [0] * len(self.dense)
        for task in range(n_tasks):
            probe = [_column(torch.ones_like(t), task) for t in tensors]
            grads = torch.autograd.grad(tensors, self.dense, grad_outputs=probe, retain_graph=True, allow_unused=True)
            for i, grad in enumerate(grads):
                reached[i] += int(grad is not None and bool(grad.ne(0).any()))
        self.shared = [p for p, count in zip(self.dense, reached) if count >= 2]
        shared_ids = {id(p) for p in self.shared}
        self.specific = [p for p in self.dense if id(p) not in shared_ids]
        self.n_tasks = n_tasks

    # ------------------------------------------------------------------ the step
    def backward(self, outputs: Mapping[str, torch.Tensor], read: Mapping[str, torch.Tensor],
                 loss: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        """Given the net's `outputs` and the `loss` computed from `read` = `detached(outputs)`: fill
        `.grad` of the task-specific and sparse parameters with the summed gradient (one backward, as
        under Adam) and return {shared parameter: [T, *shape] per-task gradients} (one backward per task)."""
        tensors, grads, n_tasks = self.output_gradients(outputs, read, loss)
        if self.shared is None:
            self.detect(tensors, n_tasks)
        shared, rest = self.shared, self.specific + self.sparse
        if rest:
            torch.autograd.backward(tensors, grads, inputs=rest, retain_graph=bool(shared))
        per_task = []
        for task in range(n_tasks if shared else 0):
            column = [_column(g, task) for g in grads]
            found = torch.autograd.grad(tensors, shared, grad_outputs=column, retain_graph=task < n_tasks - 1,
                                        allow_unused=True)
            per_task.append([torch.zeros_like(p) if g is None else g for p, g in zip(shared, found)])
        return {p: torch.stack([per_task[t][i] for t in range(n_tasks)]) for i, p in enumerate(shared)}

    def clip(self, task_grads: dict[nn.Parameter, torch.Tensor], max_norm: float) -> None:
        """Scale every gradient of the dense parameters by one factor so that the norm of the full
        gradient (specific `.grad` and the shared per-task sums) is at most `max_norm`, as
        torch.nn.utils.clip_grad_norm_ does for the summed gradient."""
        squares = [g.sum(0).float().pow(2).sum() for g in task_grads.values()]
        squares += [p.grad.float().pow(2).sum() for p in self.specific if p.grad is not None]
        if not squares:
            return
        norm = torch.stack(squares).sum().sqrt()
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for grads in task_grads.values():
            grads.mul_(scale)
        for p in self.specific:
            if p.grad is not None:
                p.grad.mul_(scale)
