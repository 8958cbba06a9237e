"""One run per run folder: a run claims its folder with an exclusive create before it writes anything there.

Two runs that resolve the same folder (a fixed `hydra.run.dir`, a resumed run still going) would otherwise
interleave their checkpoints and records. The claim file holds the owner's pid; a claim left by a process
that no longer exists (killed) is taken over, so `resume=true` after a kill works."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from recbench.errors import UserInputError
from recbench.records import process_alive

CLAIM = ".recbench-claim"


class RunDirInUse(UserInputError):
    """Another live process holds this run folder."""


def claim_run_dir(run_dir: Path) -> Callable[[], None]:
    """Claim `run_dir` for this process; returns the function that releases it. DDP worker ranks
    (LOCAL_RANK > 0) share rank 0's folder and claim nothing."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return lambda: None
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / CLAIM
    for _ in range(2):
        try:
            descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(marker.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and process_alive(owner):
                raise RunDirInUse(f"{run_dir} is in use by another recbench run (pid {owner}). Fix: wait for it, "
                                  "or give this run its own folder (drop hydra.run.dir, or pass another one)") from None
            marker.unlink(missing_ok=True)  # left by a run that is gone: take it over
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return lambda: marker.unlink(missing_ok=True)
    raise RunDirInUse(f"{run_dir}: could not claim the run folder (another run keeps claiming it). "
                      "Fix: give this run its own folder")
