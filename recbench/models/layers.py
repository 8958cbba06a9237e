"""Building blocks shared by model plugins (no paper-specific logic here)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

# Delay buckets (in the dataset's time unit): exact for small delays, coarser for the long tail.
TIME_BUCKET_EDGES = (0.5, 1.5, 2.5, 3.5, 5.5, 8.5, 15.5, 31.5, 61.5)


class MLP(nn.Sequential):
    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None,
                 dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


class FieldEmbedding(nn.Module):
    """One table per categorical field; `hist_<field>` looks up the same table as `<field>`.

    Tables are sparse by default: the module's optimiser then updates only the rows in a batch.
    """

    def __init__(self, cardinalities: dict[str, int], fields: Sequence[str], dim: int, sparse: bool) -> None:
        super().__init__()
        self.dim = dim
        self.tables = nn.ModuleDict({f: nn.Embedding(cardinalities[f], dim, padding_idx=0, sparse=sparse)
                                     for f in fields})
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.05)
            with torch.no_grad():
                table.weight[0].zero_()

    def forward(self, batch: dict[str, torch.Tensor], fields: Sequence[str], prefix: str = "") -> torch.Tensor:
        """[..., len(fields) * dim]: the fields' embeddings concatenated."""
        return torch.cat([self.tables[f](batch[prefix + f]) for f in fields], dim=-1)


class TimeEmbedding(nn.Module):
    """Embeds a non-negative delay by bucket (robust to the heavy tail of delays)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("edges", torch.tensor(TIME_BUCKET_EDGES), persistent=False)
        self.table = nn.Embedding(len(TIME_BUCKET_EDGES) + 1, dim)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        return self.table(torch.bucketize(time.contiguous(), self.edges))


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over `mask`ed positions; rows with no valid position give all zeros. The masked scores are
    the dtype's lowest finite value, not -inf: an all-masked row is then a finite uniform softmax times a zero
    mask, so neither its forward nor its backward pass holds a NaN (autograd anomaly mode, debug=*, stays quiet).
    Rows with a valid position get exactly the weights -inf would give (exp underflows to 0)."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * mask


class TargetAttentionPooling(nn.Module):
    """DIN-style pooling: an MLP scores each history token against the target, softmax over valid ones."""

    def __init__(self, dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.score = MLP(4 * dim, hidden, 1)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        query = target.unsqueeze(1).expand_as(history)
        features = torch.cat([query, history, query - history, query * history], dim=-1)
        weights = masked_softmax(self.score(features).squeeze(-1), mask)
        return torch.einsum("bl,bld->bd", weights, history)


class ActionHistoryEncoder(nn.Module):
    """Inputs shared by the multi-task baselines: user, target item and target-attended history.

    Each history item is its field embeddings plus a summary of its action slots (sum of action-type
    + delay embeddings over the actions that happened) plus its recency; the history is pooled by
    target attention. Output: one feature vector per sample.
    """

    def __init__(self, spec: dict[str, Any], embedding_dim: int, attention_hidden: Sequence[int],
                 sparse: bool) -> None:
        super().__init__()
        self.user_fields, self.item_fields = spec["user_fields"], spec["item_fields"]
        self.fields = FieldEmbedding(spec["cardinalities"], [*self.user_fields, *self.item_fields],
                                     embedding_dim, sparse)
        item_dim = embedding_dim * len(self.item_fields)
        n_actions = len(spec["history_actions"])
        self.action_type = nn.Parameter(torch.randn(n_actions, item_dim) * 0.05)
        self.action_time = TimeEmbedding(item_dim)
        self.recency = TimeEmbedding(item_dim)
        self.pool = TargetAttentionPooling(item_dim, attention_hidden)
        self.out_dim = embedding_dim * len(self.user_fields) + 2 * item_dim

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        user = self.fields(batch, self.user_fields)
        target = self.fields(batch, self.item_fields)
        history = self.fields(batch, self.item_fields, prefix="hist_")
        acted = batch["hist_action_mask"].unsqueeze(-1).float()
        actions = (self.action_type + self.action_time(batch["hist_action_time"])) * acted
        history = history + actions.sum(2) + self.recency(batch["hist_recency"])
        pooled = self.pool(target, history, batch["hist_mask"])
        return torch.cat([user, target, pooled], dim=-1)


class NumericEmbedding(nn.Module):
    """Numeric features as fields, the way FuxiCTR embeds them: feature i with value v -> v * e_i, one
    learned vector e_i per feature. values [B, N] -> [B, N, dim]."""

    def __init__(self, n_features: int, dim: int, init_std: float = 0.05) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_features, dim) * init_std)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return values.unsqueeze(-1) * self.weight


class CTRFieldEncoder(nn.Module):
    """Inputs of the multi-task baselines on tabular CTR data (the `ctr` schema): the categorical
    fields, the numeric features (NumericEmbedding) and the target-attention-pooled history of the
    item fields that have one (target: the same fields of the candidate). Output: one vector per sample.
    """

    def __init__(self, spec: dict[str, Any], embedding_dim: int, attention_hidden: Sequence[int],
                 sparse: bool) -> None:
        super().__init__()
        self.field_names = [*spec["user_fields"], *spec["item_fields"]]
        self.history = list(spec["history_fields"])
        self.fields = FieldEmbedding(spec["cardinalities"], self.field_names, embedding_dim, sparse)
        n_numeric = len(spec["numeric_fields"])
        self.numeric = NumericEmbedding(n_numeric, embedding_dim) if n_numeric else None
        history_dim = embedding_dim * len(self.history)
        self.pool = TargetAttentionPooling(history_dim, attention_hidden) if self.history else None
        self.out_dim = embedding_dim * (len(self.field_names) + n_numeric) + history_dim

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.fields(batch, self.field_names)]
        if self.numeric is not None:
            parts.append(self.numeric(batch["numeric"]).flatten(1))
        if self.pool is not None:
            target = self.fields(batch, self.history)
            history = self.fields(batch, self.history, prefix="hist_")
            parts.append(self.pool(target, history, batch["hist_mask"]))
        return torch.cat(parts, dim=-1)


class TaskTower(nn.Module):
    """Per-task tower giving one outcome logit and one delay per target action."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.net = MLP(in_dim, hidden, 2, dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, time = self.net(features).unbind(-1)
        return logit, time


class CrossNetwork(nn.Module):
    """DCN (v1) cross layers: x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l (explicit feature crosses)."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(dim) * 0.01) for _ in range(layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for weight, bias in zip(self.weights, self.biases):
            x = x0 * (x @ weight).unsqueeze(-1) + bias + x
        return x


class DCNTower(nn.Module):
    """Cross network and MLP side by side on the same input, then one linear output."""

    def __init__(self, in_dim: int, cross_layers: int, hidden: Sequence[int], dropout: float, out_dim: int = 1) -> None:
        super().__init__()
        self.cross = CrossNetwork(in_dim, cross_layers)
        self.deep = MLP(in_dim, hidden, dropout=dropout)
        self.out = nn.Linear(in_dim + hidden[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.cross(x), self.deep(x)], -1)).squeeze(-1)


# ----------------------------------------------------------------------------- live streaming inputs
# Batch keys of a behaviour sequence <name>: seq_<name>_author / _category / _kind [B, L] ids and
# seq_<name>_mask [B, L] bool; a whole row may be masked (e.g. a user without short videos).

LIVE_KIND = 2  # `kind` id of a live room in a behaviour sequence (1 = short video, 0 = padding)


def check_sequences(spec: dict[str, Any], names: Sequence[str]) -> list[str]:
    """The requested behaviour sequences, or KeyError naming one the data does not provide."""
    for name in names:
        if name not in spec.get("sequences", ()):
            raise KeyError(f"seq_{name}")  # the CLI turns a KeyError into "model does not fit data"
    return list(names)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid positions of [..., L, D]; a fully masked row gives zeros (not NaN)."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(-2) / weights.sum(-2).clamp(min=1)


class BehaviourSequenceEmbedding(nn.Module):
    """Tokens of the behaviour sequences: author + category + kind embeddings (summed).

    Short-video authors share the streamer id space and categories are shared by lives and videos,
    so the author (category) table IS the candidate's `streamer` (`category`) field table when
    `fields` has one: a history author and the candidate streamer then live in one space, which is
    what target attention and the `aid` (same-author) sequence rely on.
    """

    def __init__(self, spec: dict[str, Any], fields: FieldEmbedding, dim: int, sparse: bool) -> None:
        super().__init__()
        cardinalities = spec["cardinalities"]

        def table(field: str, space: str) -> nn.Embedding:
            if field in fields.tables:
                return fields.tables[field]
            own = nn.Embedding(cardinalities[space], dim, padding_idx=0, sparse=sparse)
            nn.init.normal_(own.weight, std=0.05)
            with torch.no_grad():
                own.weight[0].zero_()
            return own

        self.author = table("streamer", "author")
        self.category = table("category", "category")
        self.candidate_has_category = "category" in spec["item_fields"]
        self.kind = nn.Embedding(cardinalities["kind"], dim, padding_idx=0)  # 3 rows: dense is fine
        nn.init.normal_(self.kind.weight, std=0.05)

    def forward(self, batch: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B, L, dim], mask [B, L]) of sequence `name`."""
        prefix = f"seq_{name}_"
        tokens = (self.author(batch[prefix + "author"]) + self.category(batch[prefix + "category"])
                  + self.kind(batch[prefix + "kind"]))
        return tokens, batch[prefix + "mask"]

    def candidate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The candidate live room as a token of the same space, [B, dim]."""
        streamer = batch["streamer"]
        token = self.author(streamer) + self.kind.weight[LIVE_KIND]
        if self.candidate_has_category:
            token = token + self.category(batch["category"])
        return token


class LiveHistoryEncoder(nn.Module):
    """Inputs of the live multi-task baselines: user, candidate and context fields plus DIN target
    attention over the chosen behaviour sequences (default: only the live history `livelong`, i.e.
    the production baseline without the cross-domain short-video sequences)."""

    def __init__(self, spec: dict[str, Any], embedding_dim: int, attention_hidden: Sequence[int], sparse: bool,
                 sequences: Sequence[str] = ("livelong",)) -> None:
        super().__init__()
        self.sequences = check_sequences(spec, sequences)
        self.field_names = [*spec["user_fields"], *spec["item_fields"], *spec.get("context_fields", [])]
        self.fields = FieldEmbedding(spec["cardinalities"], self.field_names, embedding_dim, sparse)
        self.tokens = BehaviourSequenceEmbedding(spec, self.fields, embedding_dim, sparse)
        self.pools = nn.ModuleDict({name: TargetAttentionPooling(embedding_dim, attention_hidden)
                                    for name in self.sequences})
        self.out_dim = embedding_dim * (len(self.field_names) + len(self.sequences))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.fields(batch, self.field_names)]
        candidate = self.tokens.candidate(batch)
        for name, pool in self.pools.items():
            tokens, mask = self.tokens(batch, name)
            parts.append(pool(candidate, tokens, mask))
        return torch.cat(parts, dim=-1)


def in_batch_infonce(query: torch.Tensor, key: torch.Tensor, valid: torch.Tensor, temperature: float,
                     group: torch.Tensor | None = None, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch InfoNCE (softmax cross-entropy) of query[i] -> key[i] over the `valid` rows, on
    L2-normalised vectors: the other valid rows' keys are the negatives.

    Off-diagonal rows with the same `group` id (same user, same streamer) are not used as negatives,
    since they are not true negatives. Fewer than two valid rows: zero (nothing to contrast).
    `log_q` [B]: log of the chance that row j's key is in a batch; subtracting it from column j (logQ
    correction, Yi et al. 2019) keeps popular keys, which are more often negatives, from being pushed down.
    """
    if int(valid.sum()) < 2:
        return query.new_zeros(())
    q, k = nn.functional.normalize(query[valid], dim=-1), nn.functional.normalize(key[valid], dim=-1)
    logits = q @ k.T / temperature
    if log_q is not None:
        logits = logits - log_q[valid][None, :]
    if group is not None:
        g = group[valid]
        same = (g[:, None] == g[None, :]) & ~torch.eye(len(g), dtype=torch.bool, device=g.device)
        logits = logits.masked_fill(same, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(q), device=q.device))
