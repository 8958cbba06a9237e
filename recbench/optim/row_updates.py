"""Which id tables are updated row-wise (the sparse optimiser) and which by the dense optimiser.

A model marks its id tables sparse (`nn.Embedding(sparse=True)`, `model.net.sparse_embeddings`);
the optimizer config's `sparse_min_rows` then decides per table, by its number of rows:
  rows >= sparse_min_rows   row-wise updates (optimizer.sparse, SparseAdam): a step reads and
                            writes only the rows of the batch's ids, so its cost follows the batch
  rows <  sparse_min_rows   the table joins the dense optimiser (optimizer.dense, Adam) and the
                            gradient-norm clip, as every other parameter: a step moves every row
                            (each on its own momentum), at a cost that follows the table size
Small tables are cheap to update whole, and dense Adam fits them better (on the Tmall CTR workload
of `python -m recbench.bench --only ctr`, 54K rows, lazy SparseAdam reached a 0.006-0.009 lower
test AUC than dense Adam in 6 epochs); large tables are where row-wise updates pay off in speed.
`sparse_min_rows: auto` (the default) is AUTO_ROWS_PER_SAMPLE rows per sample of the training batch
(loader.batch_size): what a step costs each way follows the table for dense Adam and the batch's ids
for SparseAdam, so where they cross moves with the batch size (conf/optimizer/adam.yaml has the
measurements). null or 0 keeps every table the model marks sparse row-wise; a table the model marks
dense stays dense whatever its size (`model.net.sparse_embeddings=false`: all dense).

The choice switches `nn.Embedding.sparse` off before the optimisers (and any DDP wrapper) are
made; the parameters, their names and the checkpoints' state dicts are the same either way.
"""

from __future__ import annotations

from typing import Any

from torch import nn

AUTO_ROWS_PER_SAMPLE = 25  # sparse_min_rows=auto: this many rows per sample of the training batch


def resolve_sparse_min_rows(value: Any, batch_size: int) -> int | None:
    """The config's sparse_min_rows as rows: `auto` -> AUTO_ROWS_PER_SAMPLE x batch_size."""
    if value == "auto":
        return AUTO_ROWS_PER_SAMPLE * int(batch_size)
    return value


def choose_row_updates(net: nn.Module, sparse_min_rows: int | None) -> list[dict[str, Any]]:
    """Turn sparse id tables with fewer than `sparse_min_rows` rows dense; return, per table the
    model marked sparse, {"table": module name, "rows": rows, "sparse": the choice}."""
    if sparse_min_rows is not None and (isinstance(sparse_min_rows, bool) or not isinstance(sparse_min_rows, int)
                                        or sparse_min_rows < 0):
        raise ValueError(f"sparse_min_rows must be a non-negative integer or None, got {sparse_min_rows!r}")
    choices = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Embedding) and module.sparse:
            if sparse_min_rows and module.num_embeddings < sparse_min_rows:
                module.sparse = False
            choices.append({"table": name, "rows": int(module.num_embeddings), "sparse": bool(module.sparse)})
    return choices
