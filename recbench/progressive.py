"""Progressive validation of a time-ordered training stream.

Before the stream trains on its first batch of a time slice, every evaluated row of the training period
whose time falls in that slice or earlier and that was not scored yet is scored by the model as it is
then: trained on every row emitted before the slice started, on none emitted in it or later. A row's
training reports are emitted at or after its own time, so no row is ever scored by a model that has
trained on it. Rows after the last training slice are scored when fitting ends.

The dataset provides the rows as the `progressive` split (`progressive_rows` / `_label` / `_mask` /
`_pu` / `_time`, the time in Unix ms); recbench/data/streaming.py gives the slice of each training batch.

Results: `progressive/<metric>/<target>` over the rows after the warm-up (`streaming.warmup_hours` from
the first row: the model starts untrained), and a curve of the same metrics per `curve_hours` bucket.
Every DDP rank scores every row with its (identical) model; no collective call is made.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

import lightning as L
import torch

from recbench.data.streaming import StreamingConfig, slice_of

HOUR_MS = 3_600_000


class ProgressiveValidation(L.Callback):
    def __init__(self, config: StreamingConfig) -> None:
        self.config = config
        self.scored = 0  # rows (in time order) scored so far
        self.kept: list[dict[str, Any]] = []  # per scored batch: bucket, warm (after the warm-up), rows, part
        self.done = False

    # ------------------------------------------------------------------ schedule
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.plan(trainer.datamodule.tables["progressive_time"])

    def plan(self, times: torch.Tensor) -> None:
        """The rows to score in time order, their slices and where the warm-up ends."""
        self.order = torch.sort(times, stable=True).indices
        self.time = times[self.order]
        self.row_slice = slice_of(self.time, self.config.slice_ms)
        self.warm_from = int(self.time[0]) + round(self.config.warmup_hours * HOUR_MS) if len(times) else 0

    def due(self, current_slice: int | float) -> torch.Tensor:
        """Positions (in time order) of the rows to score before training on a batch of `current_slice`:
        every row not scored yet whose slice is at or before it."""
        stop = len(self.row_slice) if math.isinf(current_slice) else \
            int(torch.searchsorted(self.row_slice, torch.tensor(int(current_slice)), right=True))
        positions = torch.arange(self.scored, max(self.scored, stop))
        self.scored = max(self.scored, stop)
        return positions

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        datamodule = trainer.datamodule
        current = int(datamodule.train_sampler.batch_slice[datamodule.position[1] - 1])
        self._score(trainer, pl_module, self.due(current))

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self.done:
            self._score(trainer, pl_module, self.due(math.inf))
            self._summarise(pl_module)
            self.done = True

    # ------------------------------------------------------------------ scoring
    def _score(self, trainer, module, positions: torch.Tensor) -> None:
        """Score these rows in batches that never mix a curve bucket or the warm-up with the rest."""
        if not len(positions):
            return
        bucket = slice_of(self.time[positions], self.bucket_ms)
        warm = self.time[positions] >= self.warm_from
        groups = torch.unique_consecutive(torch.stack([bucket, warm.long()], 1), dim=0, return_counts=True)[1]
        was_training = module.training
        module.eval()
        with torch.no_grad():
            for chunk in positions.split(groups.tolist()):
                first = chunk[0] - positions[0]
                for batch in trainer.datamodule.batches("progressive", self.order[chunk]):
                    rows = len(batch["group"]) if "group" in batch else len(next(iter(batch.values())))
                    batch = {key: value.to(module.device) for key, value in batch.items()}
                    self.kept.append({"bucket": int(bucket[first]), "warm": bool(warm[first]), "rows": rows,
                                      "part": module.collect(batch)})
        module.train(was_training)

    @property
    def bucket_ms(self) -> int:
        return round(self.config.curve_hours * HOUR_MS)

    def _summarise(self, module) -> None:
        """`module.results["progressive"]` and `module.progressive_curve`."""
        module.results["progressive"] = module.metrics_of([k["part"] for k in self.kept if k["warm"]], "progressive")
        by_bucket: dict[int, list] = defaultdict(list)
        for kept in self.kept:
            by_bucket[kept["bucket"]].append(kept)
        curve = []
        for bucket, kept in sorted(by_bucket.items()):
            start = bucket * self.bucket_ms
            label = dt.datetime.fromtimestamp(start / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            curve.append({"start": start, "label": label, "rows": sum(k["rows"] for k in kept),
                          **module.metrics_of([k["part"] for k in kept], "progressive")})
        module.progressive_curve = curve

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"scored": self.scored, "kept": self.kept, "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scored, self.kept, self.done = state["scored"], state["kept"], state["done"]
