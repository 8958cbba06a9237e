"""Fault injection for the resume tests and benchmarks/soak.py: `RECBENCH_KILL_AT=<where>:<n>`.

Unset (the normal case) nothing happens. Set, the process SIGKILLs itself, with no clean-up, at
the named point: `step:N` (training step N), `valid:E` (first validation batch of epoch E),
`export:N` (after the text stage has written its N-th embedding chunk in this process). `term:N` sends
SIGTERM instead at training step N (what SLURM preemption and `timeout` send), once; `int:N` sends SIGINT
(Ctrl+C) there.
`RECBENCH_NO_SPACE=<file name>` makes every atomic write of a file of that name fail as a full disk does.
"""

from __future__ import annotations

import os
import signal

ENV = "RECBENCH_KILL_AT"


def kill_point() -> tuple[str, int] | None:
    """(where, number) from the environment, or None."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    where, _, number = spec.partition(":")
    return where, int(number)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_if_due(where: str, count: int) -> None:
    """SIGKILL this process when the kill point is `where` and `count` has reached its number."""
    point = kill_point()
    if point is not None and point[0] == where and count >= point[1]:
        die()


def terminate(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)


def no_space(path) -> None:
    """Raise ENOSPC when `RECBENCH_NO_SPACE` names this file (tests of the out-of-space path)."""
    import errno
    from pathlib import Path

    if os.environ.get("RECBENCH_NO_SPACE") == Path(path).name:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
