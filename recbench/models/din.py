"""DIN (Zhou et al., KDD 2018, "Deep Interest Network for Click-Through Rate Prediction").

Inputs: the user fields, the target item's fields and the user's history of earlier items
(`hist_<field>` [B, L] with `hist_mask` [B, L]). The history is pooled by *target attention*: a small
MLP scores each history item h_j against the target t from [t, h_j, t - h_j, t * h_j], the scores
are masked (and, optionally, softmax-normalised; the paper keeps raw scores so that the pooled
vector's norm reflects how much of the history is relevant), and the pooled vector sum_j a_j h_j
joins the user and target embeddings in a ReLU MLP that gives one logit.

Dice, the paper's data-adaptive activation, is used in the attention MLP by default:
p(s) = sigmoid(BN(s)) (batch normalisation without affine parameters), f(s) = p s + (1 - p) alpha s.

Speed: all id tables live in one table looked up once per step (`models/lookup.py`); only the
real history items are looked up, scored and pooled (never the padding; Dice's batch statistics are
therefore over real items), and the attention's first layer, which acts on [t, h, t - h, t * h],
is computed as t (W_t + W_d) once per sample plus [h, t * h] [W_h - W_d; W_p] per history item: the same function
with the same parameters (one Linear over 4D inputs) at half the per-item FLOPs.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbench.data.schema import ACTIONS, CTR
from recbench.models.layers import MLP, NumericEmbedding
from recbench.models.lookup import FusedEmbedding

ACTIVATIONS = ("dice", "relu", "prelu")


class Dice(nn.Module):
    """Dice activation over the last dimension of a [N, dim] input."""

    def __init__(self, dim: int, eps: float = 1e-9, momentum: float = 0.01) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=eps, momentum=momentum)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # p s + (1 - p) alpha s = s * lerp(alpha, 1, p)
        return x * torch.lerp(self.alpha, torch.ones_like(self.alpha), torch.sigmoid(self.norm(x)))


def activation(name: str, dim: int) -> nn.Module:
    if name == "dice":
        return Dice(dim)
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(dim)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def init_linear(module: nn.Module) -> None:
    """Xavier-normal weights and zero biases for every Linear layer of `module`."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class DINAttention(nn.Module):
    """Target attention: score(t, h_j) = MLP([t, h_j, t - h_j, t * h_j]); output sum_j a_j h_j.

    The history arrives as the items at `slots` (flat positions b * L + l of the [B, L] history,
    from `scored_slots`) rather than as a padded [B, L, D] tensor, so that neither the lookup nor the
    scoring nor the pooling touches padding.
    """

    def __init__(self, dim: int, hidden: Sequence[int], activation_name: str, softmax: bool) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("attention_hidden needs at least one layer")
        self.dim, self.softmax = dim, softmax
        self.first = nn.Linear(4 * dim, hidden[0])
        layers: list[nn.Module] = [activation(activation_name, hidden[0])]
        for width_in, width in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(width_in, width), activation(activation_name, width)]
        layers.append(nn.Linear(hidden[-1], 1))
        self.rest = nn.Sequential(*layers)

    def scored_slots(self, mask: torch.Tensor) -> torch.Tensor:
        """The flat positions of `mask` [B, L] to score: the real items, or in a training batch with
        fewer than 2 of them every position (batch statistics, as Dice's, need at least 2 rows)."""
        real = mask.reshape(-1).nonzero().squeeze(1)
        if len(real) >= 2 or not self.training:
            return real
        return torch.arange(mask.numel(), device=mask.device)

    def forward(self, target: torch.Tensor, items: torch.Tensor, slots: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """target [B, D]; items [N, D], the history items at `slots` [N]; mask [B, L] -> pooled [B, D]."""
        batch, length = mask.shape
        row = slots // length  # index_select / index_add (not x[idx]): their backwards are a gather and an index_add
        w_t, w_h, w_d, w_p = self.first.weight.split(self.dim, dim=1)  # [t, h, t - h, t * h]
        per_sample = F.linear(target, w_t + w_d, self.first.bias)                        # [B, H]
        hidden = F.linear(torch.cat([items, target.index_select(0, row) * items], -1),
                          torch.cat([w_h - w_d, w_p], 1)) + per_sample.index_select(0, row)
        scores = self.rest(hidden).squeeze(-1)                                            # [N]
        real = mask.reshape(-1).index_select(0, slots)
        if self.softmax:  # normalise over each sample's real items
            dense = scores.new_full((batch * length,), float("-inf"))
            dense = dense.index_copy(0, slots, scores.masked_fill(~real, float("-inf"))).view(batch, length)
            weights = torch.softmax(dense, -1).nan_to_num(0.0).view(-1).index_select(0, slots)
        else:
            weights = scores * real
        return items.new_zeros(batch, items.shape[1]).index_add(0, row, items * weights.unsqueeze(1))


class DIN(nn.Module):
    """User fields + target item fields + attention-pooled history -> MLP -> `logit` [B].

    On `ctr` data (a FuxiCTR dataset config) the numeric features (value x a learned vector each) join
    the MLP input too, and the MLP gives one logit per label: `task_logits` [B, T]."""
    accepts = (ACTIONS, CTR)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, history_fields: Sequence[str] | None,
                 attention_hidden: Sequence[int], attention_activation: str, attention_softmax: bool,
                 mlp_hidden: Sequence[int], dropout: float, embedding_init_std: float,
                 sparse_embeddings: bool) -> None:
        super().__init__()
        self.user_fields, self.item_fields = list(spec["user_fields"]), list(spec["item_fields"])
        self.ctr = CTR.name in spec.get("schemas", ())
        # None: every field the data has a history of (ctr data: spec["history_fields"])
        self.history_fields = list(spec["history_fields"] if history_fields is None else history_fields)
        histories = spec.get("history_fields", self.item_fields)
        unknown = [f for f in self.history_fields if f not in histories]
        if unknown or not self.history_fields:
            raise KeyError(f"history fields {unknown or '[]'} (the history has {', '.join(histories) or 'none'}; "
                           "model.net.history_fields picks them)")
        self.embedding = FusedEmbedding(spec["cardinalities"], [*self.user_fields, *self.item_fields],
                                        embedding_dim, sparse_embeddings, embedding_init_std)
        history_dim = embedding_dim * len(self.history_fields)
        self.attention = DINAttention(history_dim, attention_hidden, attention_activation, attention_softmax)
        n_numeric = len(spec["numeric_fields"]) if self.ctr else 0
        self.numeric = NumericEmbedding(n_numeric, embedding_dim, embedding_init_std) if n_numeric else None
        in_dim = embedding_dim * (len(self.user_fields) + len(self.item_fields) + n_numeric) + history_dim
        self.mlp = MLP(in_dim, mlp_hidden, len(spec["tasks"]) if self.ctr else 1, dropout)
        init_linear(self)

    def batch_keys(self) -> set[str]:
        numeric = {"numeric"} if self.numeric is not None else set()
        return {*self.user_fields, *self.item_fields, *(f"hist_{f}" for f in self.history_fields), "hist_mask",
                *numeric}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fields = [*self.user_fields, *self.item_fields]
        mask = batch["hist_mask"]
        slots = self.attention.scored_slots(mask)  # only these history positions are looked up
        found = self.embedding([(f, batch[f]) for f in fields]
                               + [(f, batch[f"hist_{f}"].reshape(-1).index_select(0, slots))
                                  for f in self.history_fields])
        single = dict(zip(fields, found))
        query = torch.cat([single[f] for f in self.history_fields], -1)            # [B, H*D]
        items = torch.cat(found[len(fields):], -1)                                  # [N, H*D]
        pooled = self.attention(query, items, slots, mask)
        parts = [*found[:len(fields)], pooled]
        if self.numeric is not None:
            parts.append(self.numeric(batch["numeric"]).flatten(1))
        out = self.mlp(torch.cat(parts, -1))
        return {"task_logits": out} if self.ctr else {"logit": out.squeeze(-1)}
