"""DeepFM (Guo et al., IJCAI 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction").

Every categorical field (user fields, target item fields) is one FM field; each history field
(`hist_<field>` [B, L], masked by `hist_mask`) is one more field: the masked mean of its item
embeddings (the history shares the target field's table). The logit is the sum of
  - the linear part: a 1-d weight per id + bias; history ids have 1-d weights of their own (an item
    seen in the history is other evidence than the same item as the target), summed over the
    valid positions, as in FuxiCTR's LR layer, which shares no weights,
  - the FM part: sum over field pairs of <e_i, e_j> = ((sum_i e_i)^2 - sum_i e_i^2) / 2,
  - the deep part: a ReLU MLP over the concatenated field embeddings.
On `ctr` data (a FuxiCTR dataset config) each numeric feature is one more field too, embedded as
value x a learned vector (and value x a learned weight in the linear part), as FuxiCTR does; the
deep part then gives one output per label and the model returns `task_logits` [B, T] (the linear and
FM parts are shared by the labels).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import ACTIONS, CTR
from recbench.models.din import init_linear
from recbench.models.layers import MLP, NumericEmbedding
from recbench.models.lookup import FusedEmbedding


class DeepFM(nn.Module):
    """Linear + FM + MLP over shared field embeddings -> `logit` [B]."""
    accepts = (ACTIONS, CTR)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, history_fields: Sequence[str] | None,
                 mlp_hidden: Sequence[int], dropout: float, embedding_init_std: float,
                 sparse_embeddings: bool) -> None:
        super().__init__()
        self.fields = [*spec["user_fields"], *spec["item_fields"]]
        self.ctr = CTR.name in spec.get("schemas", ())
        # None: every field the data has a history of (ctr data: spec["history_fields"])
        self.history_fields = list(spec["history_fields"] if history_fields is None else history_fields)
        histories = spec.get("history_fields", spec["item_fields"])
        unknown = [f for f in self.history_fields if f not in histories]
        if unknown:
            raise KeyError(f"history fields {unknown} (the history has {', '.join(histories) or 'none'}; "
                           "model.net.history_fields picks them, [] for none)")
        # one fused table; of each id's row, columns [0, D) are its embedding, column D its 1-d
        # linear weight as a field and column D + 1 its own 1-d weight inside a history
        self.embedding = FusedEmbedding(spec["cardinalities"], self.fields, embedding_dim + 2,
                                        sparse_embeddings, embedding_init_std)
        self.dim = embedding_dim
        self.bias = nn.Parameter(torch.zeros(1))
        n_numeric = len(spec["numeric_fields"]) if self.ctr else 0
        # numeric feature i: value x row i ([0, D) its vector, D its linear weight)
        self.numeric = NumericEmbedding(n_numeric, embedding_dim + 1, embedding_init_std) if n_numeric else None
        n_fields = len(self.fields) + len(self.history_fields) + n_numeric
        self.mlp = MLP(n_fields * embedding_dim, mlp_hidden, len(spec["tasks"]) if self.ctr else 1, dropout)
        init_linear(self)

    def batch_keys(self) -> set[str]:
        history = {*(f"hist_{f}" for f in self.history_fields), "hist_mask"} if self.history_fields else set()
        return {*self.fields, *history, *({"numeric"} if self.numeric is not None else ())}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        single = torch.stack(self.embedding([(f, batch[f]) for f in self.fields]), 1)   # [B, F0, D+2]
        linear = self.bias + single[..., self.dim].sum(1, keepdim=True)                # [B, 1]
        fields = [single[..., :self.dim]]
        if self.history_fields:
            mask = batch["hist_mask"].to(single.dtype)                                 # [B, L]
            count = mask.sum(1, keepdim=True).clamp(min=1.0)                          # [B, 1]
            sums = torch.stack(self.embedding.pooled([(f, batch[f"hist_{f}"]) for f in self.history_fields],
                                                     mask), 1)                         # [B, H, D+2]
            fields.append(sums[..., :self.dim] / count.unsqueeze(1))                  # masked means
            linear = linear + sums[..., self.dim + 1].sum(1, keepdim=True)
        if self.numeric is not None:
            numeric = self.numeric(batch["numeric"])                                   # [B, N, D+1]
            fields.append(numeric[..., :self.dim])
            linear = linear + numeric[..., self.dim].sum(1, keepdim=True)
        emb = torch.cat(fields, 1)                                          # [B, F, D]
        fm = 0.5 * (emb.sum(1).square() - emb.square().sum(1)).sum(-1, keepdim=True)
        deep = self.mlp(emb.flatten(1))
        logits = linear + fm + deep                                         # [B, 1] ([B, T] on ctr data)
        return {"task_logits": logits} if self.ctr else {"logit": logits.squeeze(-1)}
