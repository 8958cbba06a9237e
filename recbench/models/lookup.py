"""Id-table lookups: several fields fused in one table, and a fast CPU gradient for dense tables.

Why a custom gradient: on CPU, torch's dense embedding backward (and `index_add_`) adds the
gradient of each looked-up position into its row one small row-add at a time; for a CTR batch of
4,096 samples x 47 ids that was a third of a DeepFM training step. The same sum is a sparse-dense
matrix product: grad_table = S^T grad_out, where S [positions x rows] holds each position's weight
at its id's column. `S^T` is built in CSR form from one sort of the ids and multiplied in one call,
with the same sums (each row's terms in position order, so the result is deterministic) at 2-3x
the speed. CUDA keeps torch's own kernels, which are fast there.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# the CSR product below is all this module uses of torch's sparse support, and is tested here
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def sorted_unique(ids: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.unique(ids, return_inverse=True)` for ids in [0, size): with a presence table instead
    of a sort when the table is not much larger than the batch."""
    if size > 8 * len(ids) + 4096:
        return torch.unique(ids, return_inverse=True)
    present = torch.zeros(size, dtype=torch.bool, device=ids.device).index_fill_(0, ids, True)
    unique = present.nonzero().squeeze(1)
    position = torch.empty(size, dtype=torch.long, device=ids.device)
    position.index_copy_(0, unique, torch.arange(len(unique), device=ids.device))
    return unique, position.index_select(0, ids)


def rows_gradient(ids: torch.Tensor, weights: torch.Tensor | None, grad_out: torch.Tensor,
                  n_rows: int) -> torch.Tensor:
    """[n_rows, D] with row r = sum over positions p with ids[p] == r of weights[p] * grad_out[p // L]
    (ids and weights [R, L], grad_out [R, D]): the gradient of a weighted-sum lookup, as one CSR product."""
    flat = ids.reshape(-1)
    keys = flat.int() if n_rows < 2**31 else flat  # 32-bit keys sort about twice as fast
    order = torch.sort(keys, stable=True).indices  # stable: each row sums its terms in position order
    row_starts = torch.zeros(n_rows + 1, dtype=torch.long, device=ids.device)
    torch.cumsum(torch.bincount(flat, minlength=n_rows), 0, out=row_starts[1:])
    values = (torch.ones(len(flat), dtype=grad_out.dtype, device=ids.device) if weights is None
              else weights.reshape(-1).index_select(0, order).to(grad_out.dtype))
    transposed = torch.sparse_csr_tensor(row_starts, order // ids.shape[1], values, (n_rows, len(grad_out)),
                                         check_invariants=False)  # valid by construction
    return transposed @ grad_out.contiguous()


class _WeightedRowSum(torch.autograd.Function):
    """out[r] = sum_l weights[r, l] * table[ids[r, l]] (weights None: all ones) with `rows_gradient`
    as the table's gradient; row `padding` gets none, as nn.Embedding(padding_idx=...)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor | None,
                padding: int) -> torch.Tensor:
        ctx.save_for_backward(ids, weights)
        ctx.n_rows, ctx.padding = len(table), padding
        if ids.shape[1] == 1 and weights is None:
            return table.index_select(0, ids.view(-1))
        return F.embedding_bag(ids, table, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        ids, weights = ctx.saved_tensors
        grad = rows_gradient(ids, weights, grad_out, ctx.n_rows)
        grad[ctx.padding] = 0
        return grad, None, None, None


@torch.compiler.disable  # the CSR gradient is outside what torch.compile traces; the rest of a net compiles
def weighted_row_sum(table: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor | None = None,
                     padding: int = 0) -> torch.Tensor:
    """[R, L] ids (and optional [R, L] constant weights) -> [R, D] weighted sums of their table rows;
    the table's gradient is dense, with row `padding` kept at zero."""
    if weights is not None and weights.requires_grad:
        raise ValueError("weighted_row_sum: the weights are constants (a mask); no gradient flows to them")
    if table.is_cuda or not torch.is_grad_enabled() or not table.requires_grad:  # torch's own kernels
        found = F.embedding(ids, table, padding_idx=padding)
        return (found if weights is None else found * weights.unsqueeze(-1)).sum(1)
    return _WeightedRowSum.apply(table, ids, weights, padding)


class FusedEmbedding(nn.Module):
    """The id tables of several fields stacked in ONE table (field f's id i > 0 is row offset_f + i;
    every field's padding id 0 is the shared, always-zero row 0), looked up once per forward.

    Sparse (for SparseAdam): one lookup per step over the batch's unique ids gives one sparse
    gradient with one row per distinct id, so the optimiser touches each row once and runs once per
    step, instead of once per field over every (repeated) id. Dense: the lookups go through
    `weighted_row_sum` and its fast CPU gradient. Either way the same function and the same per-row
    gradients as one `nn.Embedding(padding_idx=0)` per field.
    """

    def __init__(self, cardinalities: dict[str, int], fields: Sequence[str], dim: int, sparse: bool,
                 init_std: float) -> None:
        super().__init__()
        offsets, total = {}, 1
        for field in fields:
            offsets[field] = total - 1  # id i >= 1 of this field -> row total - 1 + i
            total += int(cardinalities[field]) - 1
        self.offsets = offsets
        self.dim = dim
        self.table = nn.Embedding(total, dim, padding_idx=0, sparse=sparse)
        with torch.no_grad():
            self.table.weight.normal_(0.0, init_std)
            self.table.weight[0].zero_()

    def rows(self, field: str, ids: torch.Tensor) -> torch.Tensor:
        """A field's ids -> their rows of the fused table (padding 0 stays 0)."""
        return torch.where(ids > 0, ids + self.offsets[field], 0)

    def forward(self, lookups: Sequence[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        """[(field, ids of any shape), ...] -> [embeddings of shape ids.shape + (dim,), ...]."""
        rows = [self.rows(field, ids).reshape(-1) for field, ids in lookups]
        if self.table.sparse:
            unique, inverse = sorted_unique(torch.cat(rows), len(self.table.weight))
            flat = self.table(unique).index_select(0, inverse)  # backward: one index_add into the unique rows
        else:  # a dense gradient sums repeated ids itself: no dedupe needed
            flat = weighted_row_sum(self.table.weight, torch.cat(rows).unsqueeze(1))
        parts = flat.split([len(r) for r in rows])
        return [part.view(*ids.shape, self.dim) for part, (_, ids) in zip(parts, lookups)]

    def pooled(self, lookups: Sequence[tuple[str, torch.Tensor]], weights: torch.Tensor) -> list[torch.Tensor]:
        """[(field, ids [B, L]), ...] and constant weights [B, L] -> [sum_l weights[b, l] * e(ids[b, l])
        of shape [B, dim], ...]: pooled without materialising the [B, L, dim] embeddings."""
        if self.table.sparse:
            return [(found * weights.unsqueeze(-1)).sum(1) for found in self(lookups)]
        ids = torch.cat([self.rows(field, ids) for field, ids in lookups])       # [B * n, L]
        pooled = weighted_row_sum(self.table.weight, ids, weights.repeat(len(lookups), 1))
        return list(pooled.chunk(len(lookups)))
