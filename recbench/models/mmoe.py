"""MMoE (Ma et al., KDD 2018): shared experts, one softmax gate and one tower per task.

The input encoder and the outputs follow the schema the data produces (recbench/data/schema.py):
  `actions` (e.g. Tmall): a task is one target action; each tower predicts that action's outcome
      logit and delay -> `action_logit`, `action_time` [B, K];
  `live` (e.g. KuaiLive): a task is one ranking target (click, long view, ...);
      fields + DIN-pooled live history (layers.LiveHistoryEncoder) -> `task_logits` [B, T];
  `ctr` (e.g. a FuxiCTR dataset config): a task is one label column; fields, numeric features and
      the target-attention-pooled history (layers.CTRFieldEncoder) -> `task_logits` [B, T].
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import ACTIONS, CTR, LIVE, pick
from recbench.models.layers import MLP, ActionHistoryEncoder, CTRFieldEncoder, LiveHistoryEncoder, TaskTower


class MMoE(nn.Module):
    accepts = (ACTIONS, LIVE, CTR)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, attention_hidden: Sequence[int],
                 num_experts: int, expert_hidden: Sequence[int], tower_hidden: Sequence[int],
                 dropout: float, sparse_embeddings: bool) -> None:
        super().__init__()
        schema = pick(spec, self.accepts)
        self.live = schema is not ACTIONS  # live and ctr data: one logit per task (`task_logits`)
        encoder = {ACTIONS: ActionHistoryEncoder, LIVE: LiveHistoryEncoder, CTR: CTRFieldEncoder}[schema]
        self.encoder = encoder(spec, embedding_dim, attention_hidden, sparse_embeddings)
        n_tasks = len(spec["tasks"] if self.live else spec["target_actions"])
        in_dim = self.encoder.out_dim
        self.experts = nn.ModuleList(MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_experts))
        self.gates = nn.ModuleList(nn.Linear(in_dim, num_experts) for _ in range(n_tasks))
        # live towers give one logit; action towers a logit and a delay
        make_tower = ((lambda: MLP(expert_hidden[-1], tower_hidden, 1, dropout)) if self.live  # noqa: E731
                      else (lambda: TaskTower(expert_hidden[-1], tower_hidden, dropout)))
        self.towers = nn.ModuleList(make_tower() for _ in range(n_tasks))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = self.encoder(batch)
        experts = torch.stack([expert(features) for expert in self.experts], dim=1)  # [B, E, H]
        mixed = [torch.einsum("be,beh->bh", torch.softmax(gate(features), -1), experts) for gate in self.gates]
        if self.live:
            return {"task_logits": torch.cat([tower(x) for tower, x in zip(self.towers, mixed)], 1)}
        logits, times = zip(*(tower(x) for tower, x in zip(self.towers, mixed)))
        return {"action_logit": torch.stack(logits, 1), "action_time": torch.stack(times, 1)}
