"""LCU: comment staytime prediction with LLM-enhanced comment understanding
(Zhang et al., WWW 2025 Companion, arXiv 2504.01602).

Stage 1 (recbench/text) fine-tunes a language model on comment tasks and exports one embedding
per video caption and per comment; the data adapter serves them as `video_text_emb` [B, D] and
`comment_text_emb` [B, K, D]. This module is stage 2, the ranker of the authors' code:
  tokens   one embedding per id field, the video text embedding projected to the token width,
           K shown-comment tokens (shared projection of their text embeddings) and, with
           `history_token`, one token for the user's comment history S_{c,u} (the masked mean of the
           same comment projection over the comments the user engaged with before): the paper feeds
           this history to its stage-1 LLM; the authors' ranker has no such input, so it is an option;
  mixing   multi-head self-attention over all tokens (AutoInt-like), with a residual;
  main     DCN tower on the flattened tokens -> staytime logit (WLR by default, see tasks/staytime.py);
  comments two MLP heads on the flattened tokens -> K user-specific and K user-agnostic logits;
  companion an identical token encoder + DCN tower trained with plain BCE, used to decode WLR.
Choices on the authors' quirks: the comment-id embedding, built but unused in their code, is added
to each comment token here (`comment_id_tokens`), so the comment heads can still tell comments apart
when the text embeddings are switched off (the "no LLM" ablation); the ranking losses take logits,
not softmax outputs (tasks/staytime.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import COMMENTS
from recbench.models.layers import MLP, DCNTower, FieldEmbedding


class _TokenEncoder(nn.Module):
    """Field, video-text and comment tokens -> self-attention -> one flat vector."""

    def __init__(self, spec: dict[str, Any], dim: int, heads: int, use_text: bool, comment_id_tokens: bool,
                 history_token: bool, sparse: bool) -> None:
        super().__init__()
        self.fields = [*spec["user_fields"], *spec["item_fields"], *spec.get("context_fields", [])]
        self.embedding = FieldEmbedding(spec["cardinalities"], self.fields, dim, sparse)
        self.use_text = use_text and spec.get("text_dim", 0) > 0
        self.comment_ids = (nn.Embedding(spec["cardinalities"]["comment"], dim, padding_idx=0, sparse=sparse)
                            if comment_id_tokens else None)
        if self.use_text:
            self.video_text = nn.Linear(spec["text_dim"], dim)
            self.comment_text = nn.Linear(spec["text_dim"], dim)
        has_comments = self.use_text or comment_id_tokens
        self.slots = spec["shown_comments"] if has_comments else 0
        self.history = history_token and has_comments and spec.get("comment_history", 0) > 0
        self.tokens = len(self.fields) + int(self.use_text) + self.slots + int(self.history)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_dim = self.tokens * dim

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fields = self.embedding(batch, self.fields)
        tokens = [fields.view(fields.shape[0], len(self.fields), -1)]
        if self.use_text:
            tokens.append(self.video_text(batch["video_text_emb"]).unsqueeze(1))
        if self.slots:
            tokens.append(self._comments(batch, "comments", "comment_text_emb") * batch["comments_mask"].unsqueeze(-1))
        if self.history:
            history = self._comments(batch, "comment_history", "history_text_emb")
            mask = (batch["comment_history"] > 0).unsqueeze(-1).float()
            tokens.append(((history * mask).sum(1) / mask.sum(1).clamp(min=1)).unsqueeze(1))
        x = torch.cat(tokens, 1)
        mixed, _ = self.attention(x, x, x, need_weights=False)
        return (x + mixed).flatten(1)

    def _comments(self, batch: dict[str, torch.Tensor], ids: str, text: str) -> torch.Tensor:
        """Comment tokens: projected text embedding (+ comment-id embedding), [B, N, dim]."""
        parts = []
        if self.use_text:
            parts.append(self.comment_text(batch[text]))
        if self.comment_ids is not None:
            parts.append(self.comment_ids(batch[ids]))
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]


class LCU(nn.Module):
    accepts = (COMMENTS,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, heads: int, cross_layers: int,
                 mlp_hidden: Sequence[int], comment_hidden: Sequence[int], dropout: float, use_text: bool,
                 comment_id_tokens: bool, sparse_embeddings: bool, history_token: bool = True) -> None:
        super().__init__()
        make_encoder = lambda: _TokenEncoder(spec, embedding_dim, heads, use_text, comment_id_tokens,  # noqa: E731
                                             history_token, sparse_embeddings)
        self.encoder, self.companion_encoder = make_encoder(), make_encoder()
        width, slots = self.encoder.out_dim, spec["shown_comments"]
        self.main = DCNTower(width, cross_layers, mlp_hidden, dropout)
        self.companion = DCNTower(width, cross_layers, mlp_hidden, dropout)
        self.user_specific = MLP(width, comment_hidden, slots, dropout)
        self.user_agnostic = MLP(width, comment_hidden, slots, dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.encoder(batch)
        return {"staytime_logit": self.main(x), "companion_logit": self.companion(self.companion_encoder(batch)),
                "comment_user_logits": self.user_specific(x), "comment_agnostic_logits": self.user_agnostic(x)}
