"""Callbacks the generic trainer always uses."""

from __future__ import annotations

import time

import lightning as L


class TrainThroughput(L.Callback):
    """Training samples per second: wall time of training epochs (batch assembly included),
    with the validation passes that run inside an epoch paused out."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self.epoch_rates: list[float] = []
        self._running_since: float | None = None
        self._epoch_samples = 0
        self._epoch_seconds = 0.0

    def _pause(self) -> None:
        if self._running_since is not None:
            self._epoch_seconds += time.perf_counter() - self._running_since
            self._running_since = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_samples, self._epoch_seconds = 0, 0.0
        self._running_since = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch_samples += len(next(iter(batch.values())))

    def on_validation_start(self, trainer, pl_module) -> None:
        self._pause()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.training:
            self._running_since = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pause()
        self.samples += self._epoch_samples
        self.seconds += self._epoch_seconds
        if self._epoch_seconds > 0:
            self.epoch_rates.append(self._epoch_samples / self._epoch_seconds)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")
