"""DCN (Wang et al., ADKDD 2017) for a staytime target: field embeddings -> cross network || MLP.

The staytime head is swappable in the task config (WLR with its companion, or VR); the model
always provides both a main output and a companion logit, the head uses what it needs.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import STAYTIME
from recbench.models.layers import DCNTower, FieldEmbedding


class DCN(nn.Module):
    accepts = (STAYTIME,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, cross_layers: int, mlp_hidden: Sequence[int],
                 dropout: float, sparse_embeddings: bool) -> None:
        super().__init__()
        self.fields = [*spec["user_fields"], *spec["item_fields"], *spec.get("context_fields", [])]
        self.embedding = FieldEmbedding(spec["cardinalities"], self.fields, embedding_dim, sparse_embeddings)
        in_dim = embedding_dim * len(self.fields)
        self.main = DCNTower(in_dim, cross_layers, mlp_hidden, dropout)
        self.companion = DCNTower(in_dim, cross_layers, mlp_hidden, dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.embedding(batch, self.fields)
        return {"staytime_logit": self.main(x), "companion_logit": self.companion(x)}
