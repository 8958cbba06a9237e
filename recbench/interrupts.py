"""Ctrl+C (SIGINT) and SIGTERM (SLURM preemption, `timeout`, `kill`) end a run the same way.

During training both stop at the next batch boundary: SIGTERM through Lightning's own path (it raises
`SIGTERMException` there and `ResumeCheckpoint.on_exception` saves that point), and a first Ctrl+C is
turned into that SIGTERM, since a KeyboardInterrupt raised mid-step could leave half-applied optimizer
state in a checkpoint. A second Ctrl+C stops at once. Outside training (reading data, testing) either
signal raises `Interrupted` where the program is; the writers there are atomic, so nothing is left half
written. Whatever the point, the run writes a `status: interrupted` record, prints one line saying how to
go on, and exits with 128 + the signal number (130 for Ctrl+C, 143 for SIGTERM).

Lightning's SLURM requeue (SIGUSR1) is left alone."""

from __future__ import annotations

import signal
from typing import Any

import lightning as L

received: list[int] = []  # the signals this process got, first first


class Interrupted(KeyboardInterrupt):
    """A signal arrived outside training."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_now(signum: int, frame: Any) -> None:
    received.append(signum)
    raise Interrupted(signum)


def outside_training() -> None:
    """From the start of a run to its training, and after it: either signal stops the run where it is."""
    signal.signal(signal.SIGINT, _raise_now)
    signal.signal(signal.SIGTERM, _raise_now)


def _remember(signum: int, frame: Any) -> None:
    received.append(signum)


def before_training() -> None:
    """Lightning installs its batch-boundary SIGTERM handler when fit starts and calls the one it finds there
    too, so the one left here only remembers the signal (raising would stop mid-step); a SIGTERM that comes
    before Lightning's handler is in place is sent again when training starts (StopAtBatchBoundary)."""
    signal.signal(signal.SIGTERM, _remember)


def ignore_signals() -> None:
    """While an interruption is being recorded: a second Ctrl+C must not cut the record short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def first_signal(default: int = signal.SIGTERM) -> int:
    return received[0] if received else default


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopAtBatchBoundary(L.Callback):
    """During training, a first Ctrl+C becomes a SIGTERM to this process (stop at the batch boundary, keep
    a checkpoint); a second Ctrl+C raises at once. Installed at train start, after Lightning has noted the
    handlers it puts back at teardown; after fit, train() puts back the handlers it found before."""

    def on_train_start(self, trainer, pl_module) -> None:
        signal.signal(signal.SIGINT, self._first_ctrl_c)
        if signal.SIGTERM in received:  # came while fit was setting up: now Lightning's handler is there
            signal.raise_signal(signal.SIGTERM)

    @staticmethod
    def _first_ctrl_c(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.signal(signal.SIGINT, _raise_now)
        signal.raise_signal(signal.SIGTERM)
