"""LARM: LLM-Alignment live-streaming recommendation (Liu et al., arXiv 2504.05217).

Stage 1 (an LLM that embeds what a live room shows, aligned to what users did there) runs before the
fit: on the KuaiLive replica the text stage (recbench/text, LoRA on a causal LM) fine-tunes on segment
texts against user behaviour and exports one embedding per segment text (recbench/data/kuailive.py
`text_tasks`); KuaiLive-M3 ships segment embeddings. The data serves `live_content_emb` (the room's
latest segment started before the read time's 30-s tick) and `streamer_longterm_emb` (a long-term
pooling of the streamer's earlier rooms), both [B, content_dim], and with `data.history_content=true`
the same for the live rooms of the user's histories (`hist_<sequence>_*`: each room as a candidate at
the time the user clicked it). This module holds stages 2-3:
  retrieval  two towers. Item (author) tower: a_RecRep = MLP(candidate field embeddings),
             a_LLMRep = MLP(LayerNorm([content, long-term])) (LLM embeddings come at an arbitrary
             scale), gate lambda = sigmoid(Linear(author-id embedding)) and
             a_Fusion = lambda a_LLMRep + (1 - lambda) a_RecRep (`fusion: sum` drops the gate:
             a_LLMRep + a_RecRep; `use_llm: false` or content_dim 0: a_RecRep only). User tower:
             MLP(user + context fields, masked means of the candidate-independent sequences in
             `user_sequences`: `long`, `aid`, `livelong` are searched with the candidate and would
             leak it into the user vector) and, with codes, the mean code embedding of the live rooms of
             `user_code_sequence` (codes enrich retrieval). Both vectors are L2-normalised ->
             `user_vector`, `item_vector`; trained with in-batch softmax over the rows positive on
             `positive_task` (other rows of the same streamer are not negatives; `logq_correction`
             subtracts the log of each streamer's running share of positives) -> `aux_loss/retrieval`.
  quantise   residual k-means on the fused author embeddings (= `item_vector`): level 1 clusters
             them, each next level clusters what is left (sizes `codebook_sizes`, e.g. 512/256/64).
  ranking    DCN (cross || deep) over the ranker's own field embeddings, one learnt embedding per code
             level (id 0 = "no code yet") and, per sequence in `history_code_sequences`, DIN target
             attention of the candidate's code token over the code tokens of the history's live rooms
             (their codes quantise the fused vector of each room as it was when the user clicked it:
             the paper's user-author codes recorded during the watching interval), one output per task
             -> `task_logits` [B, T].

How the staged method runs inside one Lightning fit (our design; the paper trains the stages
one after the other in production):
  * The towers and the ranker train jointly, in the same steps, from one summed loss. The codes
    are integer ids computed under no_grad from detached vectors, so no ranker gradient reaches
    the towers: the towers learn only from the retrieval loss, exactly as in the staged pipeline,
    and one fit keeps one early stopping, one best checkpoint and one results record.
  * Every training step writes the batch's detached fused vectors into a per-author memory (last
    one seen). Every `refresh_steps` training steps the codebooks are refitted by vectorised
    k-means (`kmeans_iterations` Lloyd steps) on up to `kmeans_sample` remembered authors. The
    first fit starts from distinct points drawn with a generator seeded by `code_seed` (the run
    seed), so codes are reproducible; later fits start from the previous codebooks, so cluster ids
    keep their meaning and the code embeddings the ranker has learnt stay valid across refreshes
    (a fresh init would permute the ids and throw that learning away). If training has not
    reached a refresh when it first evaluates, the codebooks are fitted then, from the memory.
  * `code_source: moment` (default): a row's codes quantise the fused vector of the room at that
    exposure (its current content), like the paper's codes recomputed every 30 s for the user's
    watching interval. `author`: the codes of the author's remembered vector at the last refresh,
    kept in the buffer `author_codes` [n_authors, levels] (0 = author not seen in training).
  * Early steps see codes of barely trained towers; refreshing keeps re-grounding them, and by
    the last refreshes the towers move slowly, which is when the staged pipeline would quantise.
  Codebooks, `author_codes`, the step counter and the memory are saved with the checkpoint (the
  memory is only needed to refit, but a resumed run must refit from the same memory as an
  uninterrupted one to end with the same codes). Under DDP, buffers are broadcast from rank 0 at every forward,
  so all ranks use rank 0's memory and codebooks (fitted on the authors rank 0 saw). k-means sums
  with index_add_, which is deterministic on CPU only.
History codes are computed under no_grad with the current towers and codebooks at every forward;
before the first codebook fit they are all 0, like the candidate's.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from recbench.data.schema import LIVE
from recbench.models.layers import (MLP, BehaviourSequenceEmbedding, DCNTower, FieldEmbedding,
                                    TargetAttentionPooling, check_sequences, in_batch_infonce, masked_mean)

FUSIONS = ("gate", "sum")
CODE_SOURCES = ("moment", "author")


# ----------------------------------------------------------------------------- residual k-means
def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Index of the nearest centroid (squared L2) of each point, [N]; chunked to bound memory."""
    if len(points) == 0:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    squared = (centroids ** 2).sum(1)  # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, ||x||^2 does not matter
    return torch.cat([(squared - 2 * part @ centroids.T).argmin(1) for part in points.split(chunk)])


def kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator,
           init: torch.Tensor | None = None) -> torch.Tensor:
    """Lloyd's k-means -> centroids [k, H]. Start: `init`, else k distinct points drawn by `generator`
    (with repeats when there are fewer than k points).

    An empty cluster is re-seeded at a point drawn by `generator` (as sklearn and faiss do). Without this a
    warm start is a trap: codebooks first fitted on barely trained towers, whose vectors all sit close
    together, keep most centroids where no vector is any more, and the codes collapse to a handful of ids
    (measured: 2 of 512 level-1 ids in use on the KuaiLive replica)."""
    n = len(points)
    if init is None:
        pick = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,), generator=generator)
        centroids = points[pick.to(points.device)].clone()
    else:
        centroids = init.clone()
    for _ in range(iterations):
        assign = nearest_centroid(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)[:, None]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        empty = (counts[:, 0] == 0).nonzero().squeeze(1)
        if len(empty) and n:
            seeds = torch.randint(n, (len(empty),), generator=generator).to(points.device)
            centroids[empty] = points[seeds]
    return centroids


def residual_kmeans(points: torch.Tensor, sizes: Sequence[int], iterations: int, generator: torch.Generator,
                    init: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """One codebook per level; level l clusters the residuals left by levels < l.

    With at least one Lloyd step the squared error never grows from one level to the next: each
    centroid is the mean of its points, which fits them at least as well as the zero vector.
    """
    residual, codebooks = points, []
    for level, k in enumerate(sizes):
        codebook = kmeans(residual, k, iterations, generator, None if init is None else init[level])
        residual = residual - codebook[nearest_centroid(residual, codebook)]
        codebooks.append(codebook)
    return codebooks


def residual_codes(points: torch.Tensor, codebooks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Codes [N, levels] (0-based cluster ids): greedy nearest centroid level by level."""
    residual, codes = points, []
    for codebook in codebooks:
        code = nearest_centroid(residual, codebook)
        residual = residual - codebook[code]
        codes.append(code)
    return torch.stack(codes, 1)


def quantisation_errors(points: torch.Tensor, codebooks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean squared norm of the residual before quantising and after each level, [levels + 1]."""
    residual, errors = points, [(points ** 2).sum(1).mean()]
    for codebook in codebooks:
        residual = residual - codebook[nearest_centroid(residual, codebook)]
        errors.append((residual ** 2).sum(1).mean())
    return torch.stack(errors)


# ----------------------------------------------------------------------------- towers
class AuthorTower(nn.Module):
    """Item tower: ID representation, LLM representation and their (gated) fusion."""

    def __init__(self, spec: dict[str, Any], fields: FieldEmbedding, tower_dim: int, hidden: Sequence[int],
                 use_llm: bool, fusion: str) -> None:
        super().__init__()
        self.fields, self.item_fields = fields, list(spec["item_fields"])
        self.rec = MLP(fields.dim * len(self.item_fields), hidden, tower_dim)
        content_dim = int(spec.get("content_dim", 0))
        self.use_llm = use_llm and content_dim > 0
        self.llm = nn.Sequential(nn.LayerNorm(2 * content_dim), MLP(2 * content_dim, hidden, tower_dim)) \
            if self.use_llm else None
        self.gate = nn.Linear(fields.dim, 1) if self.use_llm and fusion == "gate" else None

    def forward(self, batch: dict[str, torch.Tensor], prefix: str = "", content: str = "live_content_emb",
                longterm: str = "streamer_longterm_emb") -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L2-normalised fused author vector [N, H], gate value [N] or None) of the candidates whose
        fields are `batch[prefix + field]` and content `batch[content]`, `batch[longterm]`."""
        rec = self.rec(self.fields(batch, self.item_fields, prefix))
        if self.llm is None:
            return nn.functional.normalize(rec, dim=-1), None
        llm = self.llm(torch.cat([batch[content], batch[longterm]], -1))
        if self.gate is None:
            return nn.functional.normalize(llm + rec, dim=-1), None
        weight = torch.sigmoid(self.gate(self.fields.tables["streamer"](batch[prefix + "streamer"])))  # author id
        fused = weight * llm + (1 - weight) * rec
        return nn.functional.normalize(fused, dim=-1), weight.squeeze(-1)


class UserTower(nn.Module):
    """User fields, context fields and mean-pooled candidate-independent sequences -> MLP."""

    def __init__(self, spec: dict[str, Any], fields: FieldEmbedding, sequences: Sequence[str], tower_dim: int,
                 hidden: Sequence[int], sparse: bool, extra_dim: int = 0) -> None:
        super().__init__()
        self.fields, self.sequences = fields, check_sequences(spec, sequences)
        self.field_names = [*spec["user_fields"], *spec.get("context_fields", [])]
        self.tokens = BehaviourSequenceEmbedding(spec, fields, fields.dim, sparse)
        self.mlp = MLP(fields.dim * (len(self.field_names) + len(self.sequences)) + extra_dim, hidden, tower_dim)

    def forward(self, batch: dict[str, torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
        """`extra` [B, extra_dim]: more user-side input (the pooled history codes)."""
        parts = [self.fields(batch, self.field_names)]
        parts += [masked_mean(*self.tokens(batch, name)) for name in self.sequences]
        parts += [] if extra is None else [extra]
        return nn.functional.normalize(self.mlp(torch.cat(parts, -1)), dim=-1)


# ----------------------------------------------------------------------------- the model
class LLMAlignment(nn.Module):
    accepts = (LIVE,)  # the data schemas it reads (recbench/data/schema.py; checked before any data is read)

    def __init__(self, spec: dict[str, Any], embedding_dim: int, tower_dim: int, tower_hidden: Sequence[int],
                 user_sequences: Sequence[str], use_llm: bool, fusion: str, retrieval_weight: float,
                 retrieval_temperature: float, positive_task: str, use_codes: bool, codebook_sizes: Sequence[int],
                 code_source: str, code_dim: int, refresh_steps: int, kmeans_iterations: int, kmeans_sample: int,
                 code_seed: int, cross_layers: int, mlp_hidden: Sequence[int], dropout: float,
                 sparse_embeddings: bool, history_code_sequences: Sequence[str] = (),
                 user_code_sequence: str | None = None, attention_hidden: Sequence[int] = (32,),
                 logq_correction: bool = False) -> None:
        super().__init__()
        self._check(spec, fusion, positive_task, code_source, refresh_steps, kmeans_iterations, codebook_sizes)
        self.retrieval_weight, self.temperature = retrieval_weight, retrieval_temperature
        self.positive_task, self.logq_correction = positive_task, logq_correction
        self.use_codes, self.code_source = use_codes, code_source
        self.codebook_sizes = [int(k) for k in codebook_sizes] if use_codes else []
        self.history_sequences = check_sequences(spec, history_code_sequences) if use_codes else []
        self.user_code_sequence = user_code_sequence if use_codes else None
        if self.user_code_sequence is not None:
            check_sequences(spec, [self.user_code_sequence])
        user_side = [*spec["user_fields"], *spec.get("context_fields", [])]
        retrieval_fields = FieldEmbedding(spec["cardinalities"], [*user_side, *spec["item_fields"]],
                                          embedding_dim, sparse_embeddings)
        self.user_tower = UserTower(spec, retrieval_fields, user_sequences, tower_dim, tower_hidden, sparse_embeddings,
                                    extra_dim=code_dim if self.user_code_sequence else 0)
        self.author_tower = AuthorTower(spec, retrieval_fields, tower_dim, tower_hidden, use_llm, fusion)
        # the retrieval model's own code embeddings (codes enrich retrieval through the user's history)
        self.user_code_tables = nn.ModuleList(nn.Embedding(k + 1, code_dim, padding_idx=0)
                                              for k in (self.codebook_sizes if self.user_code_sequence else []))
        # the ranker is a separate model in the paper: its own id and code embeddings
        self.rank_field_names = [*spec["user_fields"], *spec["item_fields"], *spec.get("context_fields", [])]
        self.rank_fields = FieldEmbedding(spec["cardinalities"], self.rank_field_names, embedding_dim,
                                          sparse_embeddings)
        self.code_tables = nn.ModuleList(nn.Embedding(k + 1, code_dim, padding_idx=0) for k in self.codebook_sizes)
        self.history_pools = nn.ModuleDict({name: TargetAttentionPooling(code_dim, attention_hidden)
                                            for name in self.history_sequences})
        if use_codes:
            self._register_code_state(spec["cardinalities"]["streamer"], tower_dim)
        if logq_correction:  # running count of retrieval positives per streamer
            self.register_buffer("positive_counts", torch.zeros(spec["cardinalities"]["streamer"]))
        self.refresh_steps, self.kmeans_iterations = refresh_steps, kmeans_iterations
        self.kmeans_sample, self.code_seed = kmeans_sample, code_seed
        in_dim = (embedding_dim * len(self.rank_field_names)
                  + code_dim * (len(self.codebook_sizes) + len(self.history_sequences)))
        self.ranker = DCNTower(in_dim, cross_layers, mlp_hidden, dropout, out_dim=len(spec["tasks"]))

    @staticmethod
    def _check(spec, fusion, positive_task, code_source, refresh_steps, kmeans_iterations, codebook_sizes) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if code_source not in CODE_SOURCES:
            raise ValueError(f"code_source must be one of {CODE_SOURCES}, got {code_source!r}")
        if positive_task not in spec["tasks"]:
            raise ValueError(f"positive_task must be one of {list(spec['tasks'])}, got {positive_task!r}")
        if refresh_steps < 1 or kmeans_iterations < 1 or not codebook_sizes or min(codebook_sizes) < 1:
            raise ValueError("refresh_steps, kmeans_iterations and every codebook size must be >= 1")

    def _register_code_state(self, n_authors: int, dim: int) -> None:
        for level, k in enumerate(self.codebook_sizes):
            self.register_buffer(f"codebook_{level}", torch.zeros(k, dim))
        self.register_buffer("author_codes", torch.zeros(n_authors, len(self.codebook_sizes), dtype=torch.long))
        self.register_buffer("codes_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("training_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))
        # only needed to refit, but saved: a resumed run must refit from the same memory
        self.register_buffer("author_memory", torch.zeros(n_authors, dim))
        self.register_buffer("author_seen", torch.zeros(n_authors, dtype=torch.bool))

    # ------------------------------------------------------------------ codes
    def codebooks(self) -> list[torch.Tensor]:
        return [getattr(self, f"codebook_{level}") for level in range(len(self.codebook_sizes))]

    @torch.no_grad()
    def refresh_codebooks(self) -> None:
        """Refit the residual k-means on remembered authors; recompute `author_codes`."""
        seen = self.author_seen.nonzero().squeeze(1)
        if len(seen) == 0:
            return
        generator = torch.Generator().manual_seed(int(self.code_seed) + int(self.refreshes))
        sample = seen[torch.randperm(len(seen), generator=generator)[:self.kmeans_sample].to(seen.device)]
        init = self.codebooks() if bool(self.codes_ready) else None  # warm start keeps cluster ids stable
        fitted = residual_kmeans(self.author_memory[sample], self.codebook_sizes, self.kmeans_iterations,
                                 generator, init)
        for codebook, new in zip(self.codebooks(), fitted):
            codebook.copy_(new)
        self.author_codes.zero_()
        self.author_codes[seen] = residual_codes(self.author_memory[seen], fitted) + 1
        self.codes_ready.fill_(True)
        self.refreshes += 1

    @torch.no_grad()
    def _track(self, streamer: torch.Tensor, fused: torch.Tensor) -> None:
        """Training: remember the batch's fused vectors; refit every `refresh_steps` steps.
        Evaluation before any fit: fit now from what training left in the memory."""
        if self.training:
            self.author_memory[streamer] = fused.to(self.author_memory.dtype)
            self.author_seen[streamer] = True
            self.training_steps += 1
            if int(self.training_steps) % self.refresh_steps == 0:
                self.refresh_codebooks()
        elif not bool(self.codes_ready):
            self.refresh_codebooks()

    @torch.no_grad()
    def current_codes(self, streamer: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Code ids [B, levels], 1-based; all 0 before the first fit."""
        if not bool(self.codes_ready):
            return torch.zeros(len(streamer), len(self.codebook_sizes), dtype=torch.long, device=streamer.device)
        if self.code_source == "author":
            return self.author_codes[streamer]
        return residual_codes(fused.to(self.codebook_0.dtype), self.codebooks()) + 1

    @torch.no_grad()
    def history_codes(self, batch: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [B, L, levels] (1-based, 0 = none) of the live rooms of history `name`, each quantising
        the room's fused vector as of the user's click, and their mask [B, L]."""
        prefix = f"hist_{name}_"
        if prefix + "mask" not in batch:
            raise ValueError(f"LLMAlignment: the batch has no {prefix}* keys (code attention over '{name}'). "
                             "Fix: pass data.history_content=true")
        mask = batch[prefix + "mask"]
        codes = torch.zeros(*mask.shape, len(self.codebook_sizes), dtype=torch.long, device=mask.device)
        if not bool(self.codes_ready) or not bool(mask.any()):
            return codes, mask
        if self.code_source == "author":
            codes[mask] = self.author_codes[batch[prefix + "streamer"][mask]]
            return codes, mask
        rooms = {key: value[mask] for key, value in batch.items() if key.startswith(prefix) and key != prefix + "mask"}
        fused, _ = self.author_tower(rooms, prefix, prefix + "content", prefix + "longterm")
        codes[mask] = residual_codes(fused.to(self.codebook_0.dtype), self.codebooks()) + 1
        return codes, mask

    @staticmethod
    def code_token(tables: nn.ModuleList, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the code levels' embeddings, [..., code_dim]."""
        return sum(table(codes[..., level]) for level, table in enumerate(tables))

    @torch.no_grad()
    def _log_q(self, batch: dict[str, torch.Tensor], positive: torch.Tensor) -> torch.Tensor | None:
        """Log running share of retrieval positives of each row's streamer (logQ correction), or None."""
        if not self.logq_correction:
            return None
        streamer = batch["streamer"]
        if self.training:
            self.positive_counts.index_add_(0, streamer[positive], torch.ones_like(streamer[positive], dtype=torch.float))
        counts = self.positive_counts[streamer].clamp(min=1.0)
        return torch.log(counts / self.positive_counts.sum().clamp(min=1.0))

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        item, gate = self.author_tower(batch)
        history = {}
        if self.use_codes:
            self._track(batch["streamer"], item.detach())
            history = {name: self.history_codes(batch, name)
                       for name in dict.fromkeys([*self.history_sequences, *filter(None, [self.user_code_sequence])])}
        extra = None
        if self.user_code_sequence is not None:
            codes, mask = history[self.user_code_sequence]
            extra = masked_mean(self.code_token(self.user_code_tables, codes), mask)
        user = self.user_tower(batch, extra)
        outputs = {"user_vector": user, "item_vector": item}
        if gate is not None:
            outputs["fusion_gate"] = gate
        if self.training:
            task = self.positive_task
            positive = (batch[f"label_{task}"] > 0.5) & (batch[f"mask_{task}"] > 0)
            retrieval = in_batch_infonce(user, item, positive, self.temperature, group=batch["streamer"],
                                         log_q=self._log_q(batch, positive))
            outputs["aux_loss/retrieval"] = self.retrieval_weight * retrieval
        features = [self.rank_fields(batch, self.rank_field_names)]
        if self.use_codes:
            codes = self.current_codes(batch["streamer"], item.detach())
            features += [table(codes[:, level]) for level, table in enumerate(self.code_tables)]
            candidate = self.code_token(self.code_tables, codes)
            for name in self.history_sequences:
                past, mask = history[name]
                features.append(self.history_pools[name](candidate, self.code_token(self.code_tables, past), mask))
            outputs["semantic_codes"] = codes
        outputs["task_logits"] = self.ranker(torch.cat(features, -1)).reshape(len(user), -1)
        return outputs
