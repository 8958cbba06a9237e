"""Generic LightningDataModule: index batches over pre-built tensors.

Batches are built by the adapter's vectorised `assemble(tables, split, rows)` from a tensor of row
indices. No per-sample `__getitem__` + collate: on a 2-core box that path is ~40x slower.

Distributed (DDP) runs shard the rows here, not with Lightning's DistributedSampler (the trainer
sets `use_distributed_sampler: false`): training takes every world-th batch of one shared, seeded
per-epoch permutation, dropping the last incomplete round so every rank runs the same number of
steps; evaluation gives each rank one contiguous block of rows, so no row is duplicated or dropped
and the ranks' predictions, gathered in rank order, are the single-process order (module.py).

Time-ordered training (`streaming`, recbench/data/streaming.py) replaces the shuffled epochs when the
dataset gives its training rows emit times (`train_time`): one pass over the stream in emit-time order.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from recbench.data.base import DatasetAdapter, Prepared
from recbench.data.schema import ROW_ARRAYS, SPLITS, check_prepared
from recbench.data.streaming import StreamingConfig, TimeSliceBatches
from recbench.errors import UserInputError

TIMES = "{split}_time"  # optional per-row Unix ms: emit times of training rows, exposure times of evaluated rows


class _SplitBatches(Dataset):
    """`dataset[row_index_tensor]` -> one assembled batch (samplers yield index tensors, batch_size=None)."""

    def __init__(self, adapter: DatasetAdapter, tables: dict[str, torch.Tensor], split: str,
                 keys: frozenset[str] | None = None) -> None:
        self.adapter, self.tables, self.split, self.keys = adapter, tables, split, keys
        self.size = len(tables[ROW_ARRAYS.format(split=split)])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.adapter.assemble(self.tables, self.split, torch.as_tensor(rows), self.keys)


class ShardedEpochBatches(Sampler[torch.Tensor]):
    """Rank `rank`'s batches of a permutation seeded by (seed, epoch), shared by all ranks.

    The order depends on nothing but (seed, epoch), so a resumed run can rebuild it and skip the
    `skip` batches the interrupted run had already trained on (`resume_from`)."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int, world: int) -> None:
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch, self.skip = 0, 0

    def resume_from(self, epoch: int, consumed: int) -> None:
        """Continue epoch `epoch` after its first `consumed` batches (the next epoch if it was complete)."""
        self.epoch, self.skip = (epoch + 1, 0) if consumed >= len(self) else (epoch, consumed)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def __len__(self) -> int:
        return -(-self.size // self.batch_size) // self.world

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches = torch.randperm(self.size, generator=generator).split(self.batch_size)
        skip, self.skip = self.skip, 0
        for index in range(self.rank + skip * self.world, len(self) * self.world, self.world):
            yield batches[index]  # a tensor of row indices: no Python object per row


class RowBlocks(Sampler[torch.Tensor]):
    """Consecutive slices of `rows` (a range) as index tensors, `batch_size` rows each."""

    def __init__(self, rows: range, batch_size: int) -> None:
        self.rows, self.batch_size = rows, batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self):
        for begin in range(self.rows.start, self.rows.stop, self.batch_size):
            yield torch.arange(begin, min(begin + self.batch_size, self.rows.stop))


def eval_block(size: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous block of `size` evaluation rows."""
    bounds = np.linspace(0, size, world + 1).round().astype(int)
    return range(int(bounds[rank]), int(bounds[rank + 1]))


def declared_batch_keys(parts) -> frozenset[str] | None:
    """The batch keys a net and its heads read, where every one of them declares its own
    (`batch_keys()`), so that batches need not build features nobody reads; else None (every key)."""
    parts = list(parts)
    if not all(hasattr(part, "batch_keys") for part in parts):
        return None
    return frozenset().union(*(part.batch_keys() for part in parts))


class RecDataModule(L.LightningDataModule):
    def __init__(self, adapter: DatasetAdapter, batch_size: int, eval_batch_size: int, seed: int,
                 num_workers: int = 0, pin_memory: bool | str = "auto",
                 streaming: StreamingConfig | dict | None = None) -> None:
        super().__init__()
        if isinstance(streaming, dict) or streaming is None:
            streaming = StreamingConfig(**(streaming or {"enabled": False}))
        self.streaming = streaming
        if pin_memory not in (True, False, "auto"):
            raise ValueError(f"loader.pin_memory must be true, false or auto, got {pin_memory!r}")
        self.adapter = adapter
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.prepared: Prepared | None = None
        self.tables: dict[str, torch.Tensor] = {}
        self.position = (0, 0)  # (epoch, training batches consumed in it): saved in checkpoints
        self.batch_keys: frozenset[str] | None = None  # what the model and heads read (None: every key)
        self._resume: tuple[int, int] | None = None
        self.train_sampler: Sampler | None = None  # the training sampler in use (progressive validation reads it)
        self.overfit_batches = 0  # N > 0: train and validate on the same first N training batches (debug=overfit)

    def prepare(self) -> Prepared:
        """Read or build the dataset once; returns the arrays and their metadata."""
        if self.prepared is None:
            prepared = self.adapter.prepare()
            arrays, spec = prepared.arrays, prepared.meta.get("spec", {})
            tables = {k: torch.from_numpy(v) for k, v in arrays.items()}
            check_prepared(self.adapter.name, self.adapter.produces, arrays, spec,
                           lambda split, rows: self.adapter.assemble(tables, split, rows))
            for split in SPLITS:
                if len(arrays[ROW_ARRAYS.format(split=split)]) == 0:
                    raise UserInputError(f"{prepared.meta['files_dir']}: the {split} split is empty. "
                                         "Fix: use more data or change the split fractions")
            # model selection must never see test rows: validation and test are disjoint
            overlap = np.intersect1d(arrays[ROW_ARRAYS.format(split="valid")], arrays[ROW_ARRAYS.format(split="test")])
            if overlap.size:
                raise RuntimeError(f"{self.adapter.name}: {overlap.size} rows are in both validation and test")
            self.prepared, self.tables = prepared, tables
            if self.streaming.enabled is True and TIMES.format(split="train") not in arrays:
                raise UserInputError(f"streaming.enabled=true but dataset '{self.adapter.name}' gives its training rows "
                                     "no emit times (train_time). Fix: streaming.enabled=auto or false")
        return self.prepared

    @property
    def streams(self) -> bool:
        """Training consumes the rows in emit-time order (streaming.enabled, or auto + emit times)."""
        has_times = TIMES.format(split="train") in self.prepare().arrays
        return self.streaming.enabled is True or (self.streaming.enabled == "auto" and has_times)

    @property
    def progressive(self) -> bool:
        """Progressive validation runs: a time-ordered stream and exposure times of its rows to score."""
        return self.streams and self.streaming.progressive and TIMES.format(split="progressive") in self.tables

    def batches(self, split: str, rows: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Assembled evaluation batches of the given rows of a split (progressive validation)."""
        data = _SplitBatches(self.adapter, self.tables, split, self.batch_keys)
        return [data[block] for block in rows.split(self.eval_batch_size)]

    @property
    def spec(self) -> dict[str, Any]:
        return self.prepare().meta["spec"]

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batches = _SplitBatches(self.adapter, self.tables, split, self.batch_keys)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.overfit_batches and split in ("train", "valid"):
            # Lightning's own overfit_batches swaps the sampler for one that yields single rows; recbench's
            # samplers yield whole index batches, so the same N batches are served here instead
            batches = _SplitBatches(self.adapter, self.tables, "train", self.batch_keys)
            first = ShardedEpochBatches(len(batches), self.batch_size, self.seed, rank, world)
            sampler = list(itertools.islice(iter(first), self.overfit_batches))
        elif shuffle:
            if self.streams:
                sampler = TimeSliceBatches(self.tables[TIMES.format(split=split)], self.batch_size, self.streaming,
                                           self.seed, rank, world)
            else:
                sampler = ShardedEpochBatches(len(batches), self.batch_size, self.seed, rank, world)
            self.train_sampler = sampler
            if self._resume is not None:
                sampler.resume_from(*self._resume)
                self._resume = None
        else:
            block = eval_block(len(batches), rank, world) if world > 1 else range(len(batches))
            sampler = RowBlocks(block, self.eval_batch_size)
        # A private generator: creating a DataLoader iterator draws one number from its generator,
        # the global RNG by default, which would shift dropout masks after a resume (the iterator is
        # created again after the RNG state is restored). Batch order never depends on it: the
        # sampler runs in this process, and workers only assemble the batches it hands them.
        return DataLoader(batches, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=self._pinned(),
                          generator=torch.Generator())

    def _pinned(self) -> bool:
        """Page-locked batches (copied to the GPU asynchronously) when training on CUDA."""
        if self.pin_memory != "auto":
            return bool(self.pin_memory)
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    # resume: count the batches that reach a training step (Lightning prefetches one batch ahead,
    # so counting in the sampler would be off by one) and save the count in every checkpoint
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            epoch = self.trainer.current_epoch
            self.position = (epoch, self.position[1] + 1 if self.position[0] == epoch else 1)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.position[0], "consumed": self.position[1]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = (state["epoch"], state["consumed"])
        self._resume = self.position

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
