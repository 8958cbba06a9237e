"""MMoE (Ma et al., KDD 2018): shared experts, one softmax gate and one tower per task.

Here a task is one target action; each tower predicts that action's outcome logit and delay.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.models.layers import MLP, ActionHistoryEncoder, TaskTower


class MMoE(nn.Module):
    def __init__(self, spec: dict[str, Any], embedding_dim: int, attention_hidden: Sequence[int],
                 num_experts: int, expert_hidden: Sequence[int], tower_hidden: Sequence[int],
                 dropout: float, sparse_embeddings: bool) -> None:
        super().__init__()
        self.encoder = ActionHistoryEncoder(spec, embedding_dim, attention_hidden, sparse_embeddings)
        n_tasks = len(spec["target_actions"])
        in_dim = self.encoder.out_dim
        self.experts = nn.ModuleList(MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_experts))
        self.gates = nn.ModuleList(nn.Linear(in_dim, num_experts) for _ in range(n_tasks))
        self.towers = nn.ModuleList(TaskTower(expert_hidden[-1], tower_hidden, dropout) for _ in range(n_tasks))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = self.encoder(batch)
        experts = torch.stack([expert(features) for expert in self.experts], dim=1)  # [B, E, H]
        logits, times = [], []
        for gate, tower in zip(self.gates, self.towers):
            mixed = torch.einsum("be,beh->bh", torch.softmax(gate(features), -1), experts)
            logit, time = tower(mixed)
            logits.append(logit)
            times.append(time)
        return {"action_logit": torch.stack(logits, 1), "action_time": torch.stack(times, 1)}
