"""What the benchmark sections share: measured subprocesses, peak memory, medians, tables."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from recbench.records import write_text_atomic

REPO = Path(__file__).resolve().parents[2]
GIB = float(1 << 30)


# ---------------------------------------------------------------------- memory of a process tree
def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                kids += [int(k) for k in handle.read().split()]
    except OSError:
        pass
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _pss_bytes(pid: int) -> int | None:
    """Proportional set size (`Pss:` of /proc/<pid>/smaps_rollup): resident bytes with every shared
    page divided among the processes mapping it. None where unreadable (gone, or not permitted)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _tree(pid: int) -> list[int]:
    out, stack, seen = [], [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        out.append(current)
        stack += _children(current)
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc; 0 elsewhere). Pages shared
    between them (Ray's object store, forked copy-on-write memory) count once per process."""
    return sum(_rss_bytes(p) for p in _tree(pid))


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(summed PSS, summed RSS, processes whose PSS was unreadable) of a process tree. The PSS sum
    counts each shared page once in all; where a process's smaps_rollup is unreadable its RSS
    stands in (an over-count, reported as the third value)."""
    pss = rss = fallback = 0
    for p in _tree(pid):
        resident = _rss_bytes(p)
        proportional = _pss_bytes(p)
        if proportional is None:
            fallback += 1 if resident else 0
            proportional = resident
        pss, rss = pss + proportional, rss + resident
    return pss, rss, fallback


class PeakTreeMemory:
    """Samples the summed PSS and RSS of a process tree every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak = self.peak_pss = 0  # bytes: summed RSS, summed PSS
        self.pss_fallback = 0          # most processes of one sample whose PSS was unreadable (RSS used)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pss, rss, fallback = tree_memory(self.pid)
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            self.pss_fallback = max(self.pss_fallback, fallback)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakTreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------- measured subprocesses
class JobFailed(RuntimeError):
    pass


def run_measured(command: Sequence[str], result_file: Path, log_file: Path, timeout: float | None = None,
                 env: dict[str, str] | None = None, cwd: Path = REPO, interval: float = 0.2) -> dict[str, Any]:
    """Run `command` in a fresh process (output to `log_file`), sample its tree's memory every
    `interval` s, and return the json it wrote to `result_file` plus `wall_seconds`,
    `peak_tree_pss_gib` (summed PSS: shared pages counted once), `peak_tree_rss_gib` (summed RSS:
    shared pages once per process) and `pss_note` where some process's PSS was unreadable."""
    result_file.unlink(missing_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_file, "w") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                   env={**os.environ, **(env or {})})
        with PeakTreeMemory(process.pid, interval) as memory:
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise JobFailed(f"{' '.join(command[:4])} ...: timed out after {timeout:.0f} s (log: {log_file})")
    wall = time.perf_counter() - started
    if code != 0 or not result_file.is_file():
        tail = log_file.read_text(errors="replace").strip().splitlines()[-15:]
        raise JobFailed(f"{' '.join(str(c) for c in command[:4])} ... exited {code} (log: {log_file}):\n"
                        + "\n".join(tail))
    result = json.loads(result_file.read_text())
    result.update(wall_seconds=wall, peak_tree_rss_gib=memory.peak / GIB, peak_tree_pss_gib=memory.peak_pss / GIB)
    if memory.pss_fallback:
        result["pss_note"] = (f"smaps_rollup unreadable for up to {memory.pss_fallback} process(es): their RSS "
                              "stands in (shared pages over-counted)")
    return result


def worker_command(job: dict[str, Any], job_file: Path) -> list[str]:
    """`python -m recbench.bench.worker <job.json>` with the job written to `job_file`."""
    job_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(job_file, json.dumps(job, indent=1))
    return [sys.executable, "-m", "recbench.bench.worker", str(job_file)]


def peak_rss_self_gib() -> float:
    """This process's peak resident set (ru_maxrss), in GiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB


# ---------------------------------------------------------------------- numbers and tables
def timed_median(rates: Sequence[float], warmup: int) -> float:
    """Median of the per-epoch rates after the first `warmup` epochs (all of them if too few)."""
    timed = list(rates[warmup:]) or list(rates)
    return float(statistics.median(timed)) if timed else float("nan")


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:,.{digits}f}"
    return str(value)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(row, widths)))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(cells[0]), rule, *(line(r) for r in cells[1:])])
