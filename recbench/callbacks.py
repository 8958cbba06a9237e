"""Callbacks the generic trainer always uses."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L

from lightning.pytorch.utilities.exceptions import SIGTERMException

from recbench.faults import die, no_space, terminate
from recbench.records import atomic_file, write_atomic
from recbench.resume_guard import sha256


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


class ResumeCheckpoint(L.Callback):
    """`last.ckpt` for `resume=true`: after every validation (so each epoch) and every
    `every_n_steps` training steps, written to a temp file and renamed (a kill mid-write leaves the
    previous checkpoint intact). Put it after the other callbacks so their state is current."""

    def __init__(self, path: Path, every_n_steps: int | None) -> None:
        self.path, self.every_n_steps = Path(path), every_n_steps

    def save(self, trainer) -> None:
        if trainer.sanity_checking:
            return
        no_space(self.path)  # fault injection, off unless RECBENCH_NO_SPACE names last.ckpt
        # one fixed temp name: every rank takes part in save_checkpoint; rank 0 writes and renames
        with atomic_file(self.path, tmp=self.path.with_name(f".{self.path.name}.tmp"),
                         commit=trainer.is_global_zero) as tmp:
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:  # resume checks the checkpoint against it (recbench/resume_guard.py);
                # the stamp goes in as .next before the rename and replaces the old one after it, so a
                # kill at any point leaves a stamp that matches the checkpoint on disk
                write_atomic(self.path.with_name(self.path.name + ".sha256.next"), sha256(tmp) + "\n")
        if trainer.is_global_zero:
            os.replace(self.path.with_name(self.path.name + ".sha256.next"),
                       self.path.with_name(self.path.name + ".sha256"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # not on an epoch's last batch: Lightning resumes such a checkpoint as a finished epoch and
        # would skip its validation; the save after validation covers that point instead
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not last_batch:
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.training:
            self.save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # SIGTERM (preemption): Lightning stops at a batch boundary; keep that point for resume=true.
        # At an epoch's end the save after validation already holds it (see on_train_batch_end).
        mid_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.completed < trainer.num_training_batches
        if isinstance(exception, SIGTERMException) and trainer.training and mid_epoch:
            self.save(trainer)


class KillSwitch(L.Callback):
    """Fault injection for the resume tests and the soak script: SIGKILL this process at training
    step N (`RECBENCH_KILL_AT=step:N`, before that step's checkpoint) or at the first validation
    batch of epoch E (`valid:E`); SIGTERM it once at step N (`term:N`), or SIGINT (`int:N`, Ctrl+C). Only installed when the
    variable is set."""

    def __init__(self, where: str, number: int) -> None:
        self.where, self.number, self.sent = where, number, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # >=: Lightning's global step moves by one per optimizer step (two per batch with sparse
        # embeddings), so an exact match could be stepped over
        if self.where == "step" and trainer.global_step >= self.number:
            die()
        if self.where in ("term", "int") and trainer.global_step >= self.number and not self.sent:
            self.sent = True
            terminate(signal.SIGTERM if self.where == "term" else signal.SIGINT)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.where == "valid" and trainer.state.fn == "fit" and trainer.current_epoch == self.number:
            die()
