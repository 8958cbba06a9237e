"""A2Gen: Action-Aware Generative Sequence Modeling (Li et al., SIGIR 2026, arXiv 2604.25834).

For a target item the model generates the user's action sequence (action type, time) ... exit.
  CAM  context-aware attention: the context enters the query, and a context gate weighs the heads.
  HSE  hierarchical sequence encoder: CAM over each history item's action tokens (context = that
       item), summed per item; then CAM over the history items (context = the target item).
  AAG  action-sequence generator over a context of (user, encoded history, target item):
       IAG (default, the variant of the paper's tables): the context is tiled into S "logit
       tokens"; auxiliary heads predict (action, time) from them, and those predictions are fed
       back into the tokens before a final CAM refines them (implicit autoregression);
       EAG (`generator: explicit`): teacher-forced causal CAM over (start, a_1, t_1, ...); at
       evaluation it decodes greedily, feeding back its own predicted action and time.

Per-action scores for AUC (the paper does not say how; this is our documented choice): with
p_i(c) the step-i class distribution (class 0 = exit, k+1 = action k) and
alive_i = prod_{j<i} (1 - p_j(exit)) the chance that generation is still running at step i,
    P(action k is generated) = sum_i alive_i * p_i(k+1),
    time(action k)           = sum_i w_i t_i / sum_i w_i,  w_i = alive_i * p_i(k+1).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbench.data.schema import ACTIONS
from recbench.models.layers import MLP, FieldEmbedding, TimeEmbedding


class ContextAwareAttention(nn.Module):
    """CAM: multi-head attention whose query sees the context and whose heads are context-gated."""

    def __init__(self, dim: int, context_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} must be divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(dim + context_dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        # each head is projected back to the full width by its own matrix, then heads are gated
        self.head_out = nn.Parameter(torch.randn(heads, self.head_dim, dim) / self.head_dim ** 0.5)
        self.gate = nn.Linear(context_dim, heads)
        self.context_residual = nn.Linear(context_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.post = MLP(dim, [2 * dim], dim, dropout)
        self.dropout = dropout

    def forward(self, seq: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """seq [N, L, D], context [N, C], mask [N, L] (True = attend) -> [N, L, D]."""
        n, length, _ = seq.shape
        tiled = context.unsqueeze(1).expand(n, length, context.shape[-1])
        split = lambda x: x.view(n, length, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(torch.cat([seq, tiled], -1))), split(self.key(seq)), split(self.value(seq))
        attn_mask = None
        if mask is not None:
            # a row with nothing to attend to would give NaN; let it see position 0 (zeroed later)
            safe = mask.clone()
            safe[:, 0] |= ~mask.any(1)
            attn_mask = safe[:, None, None, :]
        if causal:
            lower = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
            attn_mask = lower if attn_mask is None else attn_mask & lower
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.dropout if self.training else 0.0)
        # sum_h gate_h * (head_h @ W_h) == [gate_1 head_1, ..., gate_H head_H] @ [W_1; ...; W_H]:
        # gating before the projection avoids an H-times larger intermediate
        gate = torch.softmax(self.gate(context), -1)
        gated = (heads * gate[:, :, None, None]).transpose(1, 2).reshape(n, length, -1)
        out = gated @ self.head_out.flatten(0, 1) + self.context_residual(context).unsqueeze(1)
        out = self.norm(out + seq)
        return out + self.post(out)


class A2Gen(nn.Module):
    accepts = (ACTIONS,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, model_dim: int, heads: int,
                 context_hidden: Sequence[int], generator: str, dropout: float, sparse_embeddings: bool) -> None:
        super().__init__()
        if generator not in ("implicit", "explicit"):
            raise ValueError(f"generator must be 'implicit' (IAG) or 'explicit' (EAG), got {generator!r}")
        self.generator = generator
        self.user_fields, self.item_fields = spec["user_fields"], spec["item_fields"]
        self.steps = spec["sequence_length"]
        self.classes = len(spec["target_actions"]) + 1  # exit + actions
        d = model_dim
        self.fields = FieldEmbedding(spec["cardinalities"], [*self.user_fields, *self.item_fields],
                                     embedding_dim, sparse_embeddings)
        item_dim = embedding_dim * len(self.item_fields)
        user_dim = embedding_dim * len(self.user_fields)
        # HSE, action level: slot token = is_act * [action-type emb ; time emb] -> d
        self.action_type = nn.Embedding(len(spec["history_actions"]), d)
        self.action_time = TimeEmbedding(d)
        self.action_token = nn.Linear(2 * d, d)
        self.item_context = nn.Linear(item_dim, d)
        self.cam_action = ContextAwareAttention(d, d, heads, dropout)
        # HSE, item level: [item fields ; Seq_j ; recency] -> d, attended against the target item
        self.recency = TimeEmbedding(d)
        self.item_token = nn.Linear(item_dim + 2 * d, d)
        self.cam_item = ContextAwareAttention(d, d, heads, dropout)
        # AAG
        self.context = MLP(user_dim + d + item_dim, context_hidden, d, dropout)
        self.position = nn.Parameter(torch.randn(self.steps, d) * 0.05)
        self.cam_gen = ContextAwareAttention(d, d, heads, dropout)
        self.cls_head = nn.Linear(d, self.classes)
        self.time_head = nn.Linear(d, 1)
        if generator == "implicit":
            self.logit_tokens = nn.Linear(d, self.steps * d)
            self.aux_cls_head = nn.Linear(d, self.classes)
            self.aux_time_head = nn.Linear(d, 1)
            self.feedback = nn.Linear(self.classes + 1, d)
        else:
            self.start = nn.Parameter(torch.randn(d) * 0.05)
            self.step_action = nn.Embedding(self.classes, d)
            self.step_time = nn.Linear(1, d)

    # ------------------------------------------------------------------ HSE
    def encode_history(self, batch: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        b, length, slots = batch["hist_action_mask"].shape
        acted = batch["hist_action_mask"]
        kinds = self.action_type.weight.expand(b, length, slots, -1)
        tokens = self.action_token(torch.cat([kinds, self.action_time(batch["hist_action_time"])], -1))
        tokens = tokens * acted.unsqueeze(-1)
        items = self.fields(batch, self.item_fields, prefix="hist_")  # [B, L, item_dim]
        per_action = self.cam_action(tokens.flatten(0, 1), self.item_context(items).flatten(0, 1),
                                     mask=acted.flatten(0, 1))
        seq_j = (per_action * acted.flatten(0, 1).unsqueeze(-1)).sum(1).view(b, length, -1)
        item_tokens = self.item_token(torch.cat([items, seq_j, self.recency(batch["hist_recency"])], -1))
        mask = batch["hist_mask"]
        encoded = self.cam_item(item_tokens, self.item_context(target), mask=mask)
        return (encoded * mask.unsqueeze(-1)).sum(1)

    # ------------------------------------------------------------------ AAG
    def _heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_head(hidden), self.time_head(hidden).squeeze(-1)

    def generate_implicit(self, context: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.logit_tokens(context).view(-1, self.steps, context.shape[-1]) + self.position
        aux_logits, aux_time = self.aux_cls_head(tokens), self.aux_time_head(tokens).squeeze(-1)
        fed_back = tokens + self.feedback(torch.cat([aux_logits.softmax(-1), aux_time.unsqueeze(-1)], -1))
        logits, time = self._heads(self.cam_gen(fed_back, context))
        return {"step_logits": logits, "step_time": time, "aux_step_logits": aux_logits, "aux_step_time": aux_time}

    def _step_inputs(self, classes: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        return self.step_action(classes) + self.step_time(times.unsqueeze(-1))

    def generate_explicit(self, context: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        start = self.start.expand(context.shape[0], 1, -1)
        if self.training:  # teacher forcing: step i sees the true steps before it
            previous = (batch["label_seq"][:, :-1] - 1).clamp(min=0)
            inputs = torch.cat([start, self._step_inputs(previous, batch["label_seq_time"][:, :-1])], 1)
            logits, time = self._heads(self.cam_gen(inputs + self.position, context, causal=True))
            return {"step_logits": logits, "step_time": time}
        inputs = start
        for step in range(self.steps):  # greedy decoding on the model's own predictions
            hidden = self.cam_gen(inputs + self.position[: step + 1], context, causal=True)
            logits, time = self._heads(hidden)
            if step + 1 < self.steps:
                chosen = self._step_inputs(logits[:, -1].argmax(-1), time[:, -1])
                inputs = torch.cat([inputs, chosen.unsqueeze(1)], 1)
        return {"step_logits": logits, "step_time": time}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        user = self.fields(batch, self.user_fields)
        target = self.fields(batch, self.item_fields)
        context = self.context(torch.cat([user, self.encode_history(batch, target), target], -1))
        if self.generator == "implicit":
            outputs = self.generate_implicit(context)
        else:
            outputs = self.generate_explicit(context, batch)
        outputs.update(action_scores(outputs["step_logits"], outputs["step_time"]))
        return outputs


def action_scores(step_logits: torch.Tensor, step_time: torch.Tensor, eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """Per-action probability of being generated before exit, and its expected time (module doc)."""
    probs = step_logits.softmax(-1)  # [B, S, 1 + K]
    stay = 1 - probs[..., 0]
    alive = torch.cumprod(torch.cat([torch.ones_like(stay[:, :1]), stay[:, :-1]], 1), 1)
    weights = alive.unsqueeze(-1) * probs[..., 1:]  # [B, S, K]
    generated = weights.sum(1).clamp(eps, 1 - eps)
    time = (weights * step_time.unsqueeze(-1)).sum(1) / weights.sum(1).clamp(min=eps)
    return {"action_logit": torch.logit(generated), "action_time": time}
