"""Time-ordered ("streaming") training: the rows of a stream are consumed in emit-time order.

A dataset whose training rows carry an emit time (`train_time`, Unix ms: when the row's label became
known and the row was reported) can be trained the way an online recommender learns: the time axis
is cut into slices of `slice_minutes` on the Unix-epoch grid, slices are consumed in order, each
`passes` times, and rows never move across slices. Inside a slice the rows keep their emit-time
order (ties broken by a seeded draw) unless `shuffle_within_slice` is set.

The batches of a slice are cut so that every DDP rank gets the same number of them (no rank waits on
another at a slice boundary and no row is dropped); rank r takes batches r, r + world, ... The plan
depends only on (times, settings, seed), so a resumed run rebuilds it and skips what it had trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from recbench.errors import UserInputError

MINUTE_MS = 60_000


@dataclass(frozen=True)
class StreamingConfig:
    """The `streaming:` settings (conf/config.yaml)."""

    enabled: bool | str = "auto"  # auto: on when the dataset gives its training rows emit times
    slice_minutes: float = 60.0
    passes: int = 1
    shuffle_within_slice: bool = False
    progressive: bool = True
    warmup_hours: float = 24.0
    curve_hours: float = 24.0

    def __post_init__(self) -> None:
        checks = [("enabled", self.enabled in (True, False, "auto"), "true, false or auto"),
                  ("slice_minutes", self.slice_minutes > 0, "a positive number"),
                  ("passes", isinstance(self.passes, int) and self.passes >= 1, "a positive integer"),
                  ("warmup_hours", self.warmup_hours >= 0, "a number >= 0"),
                  ("curve_hours", self.curve_hours > 0, "a positive number")]
        for key, ok, expected in checks:
            if not ok:
                raise UserInputError(f"config 'streaming.{key}' is {getattr(self, key)!r}; it must be {expected}. "
                                     f"Fix: streaming.{key}=<{expected}>")

    @property
    def slice_ms(self) -> int:
        return max(1, round(self.slice_minutes * MINUTE_MS))


def slice_of(times: torch.Tensor | np.ndarray, slice_ms: int):
    """The time slice (on the Unix-epoch grid) each Unix-ms time falls in."""
    return times // slice_ms


class TimeSliceBatches(Sampler[torch.Tensor]):
    """Rank `rank`'s batches of the training rows in emit-time order, slice by slice."""

    def __init__(self, times: torch.Tensor, batch_size: int, config: StreamingConfig, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.config, self.seed, self.rank, self.world = batch_size, config, seed, rank, world
        generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)
        tie_break = torch.randperm(len(times), generator=generator)  # equal emit times: a seeded order
        self.order = tie_break[torch.sort(times[tie_break], stable=True).indices]
        slices, counts = torch.unique_consecutive(slice_of(times[self.order], config.slice_ms), return_counts=True)
        self.slices, self.counts = slices, counts
        self.starts = torch.cumsum(counts, 0) - counts
        # batches per slice and pass: a multiple of the world size, each batch at most batch_size rows
        self.per_pass = world * torch.ceil(counts / (world * batch_size)).long()
        # the slice of each of this rank's batches, in order (progressive validation reads it)
        self.batch_slice = torch.repeat_interleave(slices, self.per_pass * config.passes // world)
        self.epoch, self.skip = 0, 0

    def resume_from(self, epoch: int, consumed: int) -> None:
        """Continue after the first `consumed` batches (the next epoch if the stream was complete)."""
        self.epoch, self.skip = (epoch + 1, 0) if consumed >= len(self) else (epoch, consumed)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def __len__(self) -> int:
        return len(self.batch_slice)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        position = 0
        for index in range(len(self.slices)):
            for batch in self._slice_batches(index):
                if position >= skip:
                    yield batch
                position += 1

    def _slice_batches(self, index: int):
        """This rank's batches of slice `index`, every pass."""
        start, count = int(self.starts[index]), int(self.counts[index])
        rows = self.order[start:start + count]
        for repeat in range(self.config.passes):
            if self.config.shuffle_within_slice:
                generator = torch.Generator().manual_seed(
                    self.seed * 1_000_003 + int(self.slices[index]) * 101 + repeat + self.epoch * 7_919)
                rows = rows[torch.randperm(count, generator=generator)]
            chunks = torch.tensor_split(rows, int(self.per_pass[index]))
            yield from chunks[self.rank::self.world]
