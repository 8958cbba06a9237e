"""Moment&Cross: real-time cross-domain CTR prediction for live streaming at Kuaishou
(Cao et al., arXiv 2408.05709).

Moment (the 30-second label stream with its first-only mask and the slow window's PU correction)
belongs to the data and the loss: the adapter emits `mask_<task>` / `pu_<task>` and
tasks/live.MultiTaskHead applies them. This module is Cross:
  GSU   the behaviour sequences come already searched from the adapter (short, long, aid,
        livelong, mixed); each token = author + category + kind embedding (layers.py);
  ESU   per sequence, scaled dot-product target attention: query = W^q [all candidate-side field
        embeddings], keys/values = W^k, W^v of the sequence tokens (multi-head); a fully masked
        sequence gives a zero vector;
  CL    in-batch InfoNCE between L2(mean(mixed)) (the anchor) and L2(mean(x)) for every other
        sequence x with a weight in `contrastive_weights`: row i's positive is its own sequence,
        the other rows are negatives. Rows with an empty anchor or x sequence are left out, and
        other rows of the same user (batch["group"]) are not used as negatives (their sequences
        are near copies). Outputs `aux_loss/cl_<x>` = weight * loss, training only;
  towers PLE (`num_levels` >= 2) or CGC (`num_levels` = 1) over [fields, ESU outputs], one logit
        tower per task -> `task_logits` [B, T].
The contrastive pairs are the raw token means, so the alignment acts on the shared author /
category tables that every sequence and the candidate use (paper: L2(Mean(V_x)) of the sequence
embeddings, no projection head).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import LIVE
from recbench.models.layers import (MLP, BehaviourSequenceEmbedding, FieldEmbedding, check_sequences,
                                    in_batch_infonce, masked_mean, masked_softmax)
from recbench.models.ple import extract, extraction_levels


class TargetAttention(nn.Module):
    """ESU: multi-head attention of one query (the candidate) over a sequence's valid tokens."""

    def __init__(self, query_dim: int, token_dim: int, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention_dim {dim} must be divisible by attention_heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(query_dim, dim)
        self.key, self.value = nn.Linear(token_dim, dim), nn.Linear(token_dim, dim)

    def forward(self, candidate: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """candidate [B, Q], tokens [B, L, D], mask [B, L] -> [B, dim] (zeros where nothing is valid)."""
        b, length, _ = tokens.shape
        q = self.query(candidate).view(b, self.heads, self.head_dim)
        k = self.key(tokens).view(b, length, self.heads, self.head_dim)
        v = self.value(tokens).view(b, length, self.heads, self.head_dim)
        scores = torch.einsum("bhd,blhd->bhl", q, k) / self.head_dim ** 0.5
        weights = masked_softmax(scores, mask[:, None, :])  # an all-masked row -> zeros
        return torch.einsum("bhl,blhd->bhd", weights, v).reshape(b, -1)


def drop_sequence(sequences: Sequence[str], weights: dict[str, float], anchor: str,
                  without: str | None) -> tuple[list[str], dict[str, float]]:
    """The paper's sequence ablation: leave `without` out of the ESU and out of the contrastive loss.

    Without the anchor there is nothing to align to, so every contrastive term goes with it.
    """
    if without is None:
        return list(sequences), dict(weights)
    if without not in sequences:
        raise ValueError(f"model.net.without={without!r} is not one of model.net.sequences {list(sequences)}")
    kept = [name for name in sequences if name != without]
    if without == anchor:
        return kept, {}
    return kept, {name: w for name, w in weights.items() if name != without}


class MomentCross(nn.Module):
    accepts = (LIVE,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, sequences: Sequence[str], attention_dim: int,
                 attention_heads: int, anchor: str, contrastive_weights: dict[str, float], temperature: float,
                 num_levels: int, shared_experts: int, task_experts: int, expert_hidden: Sequence[int],
                 tower_hidden: Sequence[int], dropout: float, sparse_embeddings: bool,
                 without: str | None = None) -> None:
        super().__init__()
        sequences, contrastive_weights = drop_sequence(sequences, contrastive_weights, anchor, without)
        self.sequences = check_sequences(spec, sequences)
        self.contrastive_weights = self._check_contrast(anchor, contrastive_weights)
        self.anchor, self.temperature = anchor, temperature
        self.field_names = [*spec["user_fields"], *spec["item_fields"], *spec.get("context_fields", [])]
        # the candidate's fields are a slice of the concatenated field embeddings
        first = embedding_dim * len(spec["user_fields"])
        self.candidate_slice = slice(first, first + embedding_dim * len(spec["item_fields"]))
        self.fields = FieldEmbedding(spec["cardinalities"], self.field_names, embedding_dim, sparse_embeddings)
        self.tokens = BehaviourSequenceEmbedding(spec, self.fields, embedding_dim, sparse_embeddings)
        candidate_dim = embedding_dim * len(spec["item_fields"])
        self.esu = nn.ModuleDict({name: TargetAttention(candidate_dim, embedding_dim, attention_dim, attention_heads)
                                  for name in self.sequences})
        self.n_tasks = len(spec["tasks"])
        in_dim = embedding_dim * len(self.field_names) + attention_dim * len(self.sequences)
        self.levels = extraction_levels(in_dim, self.n_tasks, num_levels, shared_experts, task_experts,
                                        expert_hidden, dropout)
        self.towers = nn.ModuleList(MLP(expert_hidden[-1], tower_hidden, 1, dropout) for _ in range(self.n_tasks))

    def _check_contrast(self, anchor: str, weights: dict[str, float]) -> dict[str, float]:
        weights = {name: float(w) for name, w in weights.items() if w}
        if weights and anchor not in self.sequences:
            raise ValueError(f"anchor {anchor!r} must be one of sequences {self.sequences}")
        unknown = [name for name in weights if name not in self.sequences or name == anchor]
        if unknown:
            raise ValueError(f"contrastive_weights names {unknown}: each must be a sequence other than the "
                             f"anchor {anchor!r}, one of {self.sequences}")
        return weights

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fields = self.fields(batch, self.field_names)
        candidate = fields[:, self.candidate_slice]
        sequences = {name: self.tokens(batch, name) for name in self.sequences}
        pooled = [self.esu[name](candidate, tokens, mask) for name, (tokens, mask) in sequences.items()]
        task_inputs = extract(self.levels, torch.cat([fields, *pooled], -1), self.n_tasks)
        outputs = {"task_logits": torch.cat([tower(x) for tower, x in zip(self.towers, task_inputs)], 1)}
        if self.training:
            outputs.update(self.contrastive_terms(sequences, batch.get("group")))
        return outputs

    def contrastive_terms(self, sequences: dict[str, tuple[torch.Tensor, torch.Tensor]],
                          group: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """`aux_loss/cl_<x>`: weighted InfoNCE of each sequence's mean against the anchor's."""
        if not self.contrastive_weights:
            return {}
        anchor_tokens, anchor_mask = sequences[self.anchor]
        anchor = masked_mean(anchor_tokens, anchor_mask)
        terms = {}
        for name, weight in self.contrastive_weights.items():
            tokens, mask = sequences[name]
            valid = anchor_mask.any(1) & mask.any(1)  # an empty sequence has no mean to align
            loss = in_batch_infonce(anchor, masked_mean(tokens, mask), valid, self.temperature, group)
            terms[f"aux_loss/cl_{name}"] = weight * loss
        return terms
