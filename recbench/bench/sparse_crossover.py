"""`python -m recbench.bench.sparse_crossover`: where row-wise sparse updates of an id table start to pay.

Times the id-table part of one training step for a fused table (recbench/models/lookup.py,
FusedEmbedding) of R rows, two ways:
  dense   the lookup through `weighted_row_sum` (dense CSR gradient, [R, D]), the table in the global
          gradient-norm clip, one dense `torch.optim.Adam` step over all R rows (FuxiCTR's way)
  sparse  one lookup over the batch's distinct ids (sparse gradient, one row per distinct id),
          `torch.optim.SparseAdam` over those rows only (recbench's row-wise default)
in a process that keeps freed memory (recbench/allocator.py, as training does), with B x K ids per
batch drawn from a heavy-tailed (Zipf, exponent `--zipf`) popularity over the rows. The two ways
alternate step by step (so both see the same background load); printed: the fastest and the median
of `--steps` steps each after 3 warm-up steps (on a busy machine the fastest is the better estimate
of the cost). The rest of a training step (MLP, attention, loss) costs the same both ways, so the
difference of these two times is the difference of the two optimizer choices. Where they cross set
`sparse_min_rows` in conf/optimizer/adam.yaml (it moves with the batch: dense Adam's step costs the
table, SparseAdam's the batch's ids).

    python -m recbench.bench.sparse_crossover [--rows 10000 50000 ...] [--batch 4096] [--ids 47] [--dim 18]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from recbench.allocator import keep_freed_memory
from recbench.models.lookup import FusedEmbedding


def id_batches(rows: int, batch: int, ids: int, steps: int, zipf: float, seed: int = 0) -> list[torch.Tensor]:
    """`steps` batches of [batch, ids] row ids in 1..rows-1 (0 is padding), popularity ~ rank^-zipf."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, rows, dtype=np.float64) ** zipf
    cdf = np.cumsum(weight)
    cdf /= cdf[-1]
    shuffle = rng.permutation(rows - 1) + 1  # popular rows spread over the table, as real ids are
    out = []
    for _ in range(steps):
        ranks = np.minimum(np.searchsorted(cdf, rng.random(batch * ids)), rows - 2)
        out.append(torch.from_numpy(shuffle[ranks].reshape(batch, ids)))
    return out


class _Table:
    """One way of training a fused table: the lookup, backward (+ clip) and optimizer step."""

    def __init__(self, rows: int, sparse: bool, dim: int) -> None:
        torch.manual_seed(0)
        self.sparse = sparse
        self.embedding = FusedEmbedding({"id": rows}, ["id"], dim, sparse=sparse, init_std=1e-4)
        self.weight = self.embedding.table.weight
        self.optimizer = (torch.optim.SparseAdam([self.weight], lr=1e-3) if sparse
                          else torch.optim.Adam([self.weight], lr=1e-3))

    def step(self, ids: torch.Tensor, grad_out: torch.Tensor) -> float:
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        (found,) = self.embedding([("id", ids)])
        found.backward(grad_out)
        if not self.sparse:  # the dense optimizer's parameters are in the global gradient-norm clip
            torch.nn.utils.clip_grad_norm_([self.weight], 10.0)
        self.optimizer.step()
        return time.perf_counter() - started


def time_both(rows: int, batches: list[torch.Tensor], dim: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """Seconds per step of the dense and the sparse way, steps alternating (so both see the same
    background load), after `warmup` steps each."""
    dense, sparse = _Table(rows, False, dim), _Table(rows, True, dim)
    grad_out = torch.randn(*batches[0].shape, dim)
    times: tuple[list[float], list[float]] = ([], [])
    for step, ids in enumerate(batches):
        for table in ((dense, sparse) if step % 2 else (sparse, dense)):  # alternate which goes first
            seconds = table.step(ids, grad_out)
            if step >= warmup:
                times[1 if table.sparse else 0].append(seconds)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recbench.bench.sparse_crossover", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+",
                        default=[10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--ids", type=int, default=47, help="ids per sample (Tmall DeepFM: 7 fields + 2 x 20 history)")
    parser.add_argument("--dim", type=int, default=18, help="row width (DeepFM: 16 + two 1-d linear columns)")
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=33)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a training process does (keep_freed_memory: true)
    print(f"batch {args.batch} x {args.ids} ids, dim {args.dim}, zipf {args.zipf}, {args.threads} threads; "
          f"ms per step, min / median of {args.steps - 3} steps (min: least disturbed by other load)")
    print(f"{'rows':>10} {'distinct/batch':>15} {'dense Adam':>15} {'SparseAdam':>15} {'dense/sparse (min)':>19}")
    for rows in args.rows:
        batches = id_batches(rows, args.batch, args.ids, args.steps, args.zipf)
        distinct = statistics.median(len(torch.unique(b)) for b in batches)
        dense, sparse = time_both(rows, batches, args.dim)
        cell = lambda s: f"{min(s) * 1e3:.1f} / {statistics.median(s) * 1e3:.1f}"  # noqa: E731
        print(f"{rows:>10,} {distinct:>15,.0f} {cell(dense):>15} {cell(sparse):>15} {min(dense) / min(sparse):>19.2f}",
              flush=True)


if __name__ == "__main__":
    main()
