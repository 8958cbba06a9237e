"""DCN (Wang et al., ADKDD 2017) for a staytime target: field embeddings -> cross network || MLP.

The staytime head is swappable in the task config (WLR with its companion, or VR); the model
always provides both a main output and a companion logit, the head uses what it needs.

On `ctr` data (a FuxiCTR dataset config) the input also holds the numeric features (value x a learned
vector each) and the masked mean of each history field's embeddings (FuxiCTR's default sequence
encoder), and one tower gives one logit per label: `task_logits` [B, T].
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import CTR, STAYTIME
from recbench.models.layers import DCNTower, FieldEmbedding, NumericEmbedding, masked_mean


class DCN(nn.Module):
    accepts = (STAYTIME, CTR)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, cross_layers: int, mlp_hidden: Sequence[int],
                 dropout: float, sparse_embeddings: bool) -> None:
        super().__init__()
        self.fields = [*spec["user_fields"], *spec["item_fields"], *spec.get("context_fields", [])]
        self.embedding = FieldEmbedding(spec["cardinalities"], self.fields, embedding_dim, sparse_embeddings)
        self.ctr = CTR.name in spec.get("schemas", ())
        self.history = list(spec["history_fields"]) if self.ctr else []
        n_numeric = len(spec["numeric_fields"]) if self.ctr else 0
        self.numeric = NumericEmbedding(n_numeric, embedding_dim) if n_numeric else None
        in_dim = embedding_dim * (len(self.fields) + len(self.history) + n_numeric)
        if self.ctr:
            self.main = DCNTower(in_dim, cross_layers, mlp_hidden, dropout, out_dim=len(spec["tasks"]))
        else:
            self.main = DCNTower(in_dim, cross_layers, mlp_hidden, dropout)
            self.companion = DCNTower(in_dim, cross_layers, mlp_hidden, dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.embedding(batch, self.fields)
        if not self.ctr:
            return {"staytime_logit": self.main(x), "companion_logit": self.companion(x)}
        parts = [x]
        if self.history:
            history = self.embedding(batch, self.history, prefix="hist_")      # [B, L, H*D]
            parts.append(masked_mean(history, batch["hist_mask"]))
        if self.numeric is not None:
            parts.append(self.numeric(batch["numeric"]).flatten(1))
        x = torch.cat(parts, -1)
        return {"task_logits": self.main(x).view(len(x), -1)}
