"""PLE (Tang et al., RecSys 2020): stacked CGC levels with shared and task-specific experts.

Each level has `shared_experts` experts every task may use and `task_experts` per task; a task's
gate mixes its own experts with the shared ones, and (below the top) a shared gate mixes all
experts to feed the next level's shared input. `num_levels=1` is CGC. `extraction_levels` and
`extract` are the backbone alone (Moment&Cross puts it on its own inputs).

The input encoder and the outputs follow the data's schema (as in mmoe.py): `actions` ->
`action_logit`, `action_time` [B, K]; `live` and `ctr` -> `task_logits` [B, T].
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import ACTIONS, CTR, LIVE, pick
from recbench.models.layers import MLP, ActionHistoryEncoder, CTRFieldEncoder, LiveHistoryEncoder, TaskTower


class _ExtractionLevel(nn.Module):
    def __init__(self, in_dim: int, n_tasks: int, shared_experts: int, task_experts: int,
                 expert_hidden: Sequence[int], dropout: float, last: bool) -> None:
        super().__init__()
        make = lambda: MLP(in_dim, expert_hidden, dropout=dropout)  # noqa: E731
        self.shared = nn.ModuleList(make() for _ in range(shared_experts))
        self.own = nn.ModuleList(nn.ModuleList(make() for _ in range(task_experts)) for _ in range(n_tasks))
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, task_experts + shared_experts) for _ in range(n_tasks))
        all_experts = shared_experts + n_tasks * task_experts
        self.shared_gate = None if last else nn.Linear(in_dim, all_experts)

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor):
        shared = [expert(shared_input) for expert in self.shared]
        own = [[expert(x) for expert in experts] for experts, x in zip(self.own, task_inputs)]
        task_outputs = []
        for gate, mine, x in zip(self.task_gates, own, task_inputs):
            experts = torch.stack(mine + shared, dim=1)
            task_outputs.append(torch.einsum("be,beh->bh", torch.softmax(gate(x), -1), experts))
        if self.shared_gate is None:
            return task_outputs, None
        everything = torch.stack(shared + [e for mine in own for e in mine], dim=1)
        shared_output = torch.einsum("be,beh->bh", torch.softmax(self.shared_gate(shared_input), -1), everything)
        return task_outputs, shared_output


def extraction_levels(in_dim: int, n_tasks: int, num_levels: int, shared_experts: int, task_experts: int,
                      expert_hidden: Sequence[int], dropout: float) -> nn.ModuleList:
    """`num_levels` stacked extraction levels; each task's output has width expert_hidden[-1]."""
    dims = [in_dim] + [expert_hidden[-1]] * (num_levels - 1)
    return nn.ModuleList(
        _ExtractionLevel(dims[i], n_tasks, shared_experts, task_experts, expert_hidden, dropout,
                         last=i == num_levels - 1) for i in range(num_levels))


def extract(levels: nn.ModuleList, features: torch.Tensor, n_tasks: int) -> list[torch.Tensor]:
    """One representation per task from the shared input features."""
    task_inputs, shared = [features] * n_tasks, features
    for level in levels:
        task_inputs, shared = level(task_inputs, shared)
    return task_inputs


class PLE(nn.Module):
    accepts = (ACTIONS, LIVE, CTR)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, attention_hidden: Sequence[int],
                 num_levels: int, shared_experts: int, task_experts: int, expert_hidden: Sequence[int],
                 tower_hidden: Sequence[int], dropout: float, sparse_embeddings: bool) -> None:
        super().__init__()
        schema = pick(spec, self.accepts)
        self.live = schema is not ACTIONS  # live and ctr data: one logit per task (`task_logits`)
        encoder = {ACTIONS: ActionHistoryEncoder, LIVE: LiveHistoryEncoder, CTR: CTRFieldEncoder}[schema]
        self.encoder = encoder(spec, embedding_dim, attention_hidden, sparse_embeddings)
        n_tasks = len(spec["tasks"] if self.live else spec["target_actions"])
        self.levels = extraction_levels(self.encoder.out_dim, n_tasks, num_levels, shared_experts, task_experts,
                                        expert_hidden, dropout)
        # live towers give one logit; action towers a logit and a delay
        make_tower = ((lambda: MLP(expert_hidden[-1], tower_hidden, 1, dropout)) if self.live  # noqa: E731
                      else (lambda: TaskTower(expert_hidden[-1], tower_hidden, dropout)))
        self.towers = nn.ModuleList(make_tower() for _ in range(n_tasks))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task_inputs = extract(self.levels, self.encoder(batch), len(self.towers))
        if self.live:
            return {"task_logits": torch.cat([tower(x) for tower, x in zip(self.towers, task_inputs)], 1)}
        logits, times = zip(*(tower(x) for tower, x in zip(self.towers, task_inputs)))
        return {"action_logit": torch.stack(logits, 1), "action_time": torch.stack(times, 1)}
