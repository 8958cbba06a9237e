"""Generic LightningDataModule: index batches over pre-built tensors.

Batches are built by the adapter's vectorised `assemble(tables, split, rows)` from a tensor of row
indices. No per-sample `__getitem__` + collate: on a 2-core box that path is ~40x slower.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from recbench.data.base import SPLITS, DatasetAdapter, Prepared
from recbench.errors import UserInputError


class _SplitBatches(Dataset):
    """`dataset[list_of_rows]` -> one assembled batch (used with a BatchSampler, batch_size=None)."""

    def __init__(self, adapter: DatasetAdapter, tables: dict[str, torch.Tensor], split: str) -> None:
        self.adapter, self.tables, self.split = adapter, tables, split
        self.size = len(tables[f"{split}_ep"])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        return self.adapter.assemble(self.tables, self.split, torch.as_tensor(rows))


class RecDataModule(L.LightningDataModule):
    def __init__(self, adapter: DatasetAdapter, batch_size: int, eval_batch_size: int, seed: int) -> None:
        super().__init__()
        self.adapter = adapter
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.prepared: Prepared | None = None
        self.tables: dict[str, torch.Tensor] = {}

    def prepare(self) -> Prepared:
        """Read or build the dataset once; returns the arrays and their metadata."""
        if self.prepared is None:
            self.prepared = self.adapter.prepare()
            self.tables = {k: torch.from_numpy(v) for k, v in self.prepared.arrays.items()}
            for split in SPLITS:
                if len(self.tables[f"{split}_ep"]) == 0:
                    raise UserInputError(f"{self.prepared.meta['files_dir']}: the {split} split is empty. "
                                         "Fix: use more data or change the split fractions")
            # model selection must never see test rows: validation and test are disjoint
            overlap = np.intersect1d(self.prepared.arrays["valid_ep"], self.prepared.arrays["test_ep"])
            if overlap.size:
                raise RuntimeError(f"{self.adapter.name}: {overlap.size} rows are in both validation and test")
        return self.prepared

    @property
    def spec(self) -> dict[str, Any]:
        return self.prepare().meta["spec"]

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batches = _SplitBatches(self.adapter, self.tables, split)
        if shuffle:
            generator = torch.Generator().manual_seed(self.seed)
            order = RandomSampler(range(len(batches)), generator=generator)
            sampler = BatchSampler(order, self.batch_size, drop_last=False)
        else:
            sampler = BatchSampler(SequentialSampler(range(len(batches))), self.eval_batch_size, drop_last=False)
        return DataLoader(batches, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
