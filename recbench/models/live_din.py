"""DIN-style baseline for live streaming (Zhou et al., KDD 2018): candidate target attention over the
live-only behaviour history, no cross-domain (short-video) sequences, no contrastive alignment.

fields (user, candidate, context) + DIN pooling of each sequence in `sequences` (default: the live
history `livelong`) -> shared MLP -> one logit per task -> `task_logits` [B, T]. It is the
reference point for Moment&Cross's Cross part: same inputs minus the short-video sequences.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import LIVE
from recbench.models.layers import MLP, LiveHistoryEncoder


class LiveDIN(nn.Module):
    accepts = (LIVE,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, sequences: Sequence[str],
                 attention_hidden: Sequence[int], mlp_hidden: Sequence[int], dropout: float,
                 sparse_embeddings: bool) -> None:
        super().__init__()
        self.encoder = LiveHistoryEncoder(spec, embedding_dim, attention_hidden, sparse_embeddings, sequences)
        self.mlp = MLP(self.encoder.out_dim, mlp_hidden, len(spec["tasks"]), dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task_logits": self.mlp(self.encoder(batch))}
