"""Results records: one `results.json` per run, written atomically, plus the console summary."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("recbench", "torch", "lightning", "hydra-core", "omegaconf", "polars", "numpy", "torchmetrics")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ------------------------------------------------------------------ temp names that say who writes them
# `.<name>.<tmp|old>-<host>-<pid>-<random>`: a later start removes the leftovers of writers that were killed
# (their process is gone) and leaves a live writer's alone, even one that has been busy for hours.
TEMP_NAME = re.compile(r"^\..+\.(?:tmp|old)-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+$")
OTHER_HOST_TEMP_SECONDS = 24 * 3600  # a temp from another machine (a shared disk): its pid cannot be checked


def _machine() -> str:
    """This host and pid namespace: containers that share a hostname (host networking) but not their pids
    must not judge each other's writers by pid."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}~{namespace}"


def temp_prefix(name: str, kind: str = "tmp") -> str:
    return f".{name}.{kind}-{_machine()}-{os.getpid()}-"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_temps(folder: Path) -> list[Path]:
    """Remove the temp files and folders in `folder` whose writer is gone; returns what was removed."""
    removed = []
    host = _machine()
    try:
        entries = list(Path(folder).glob(".*"))
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_NAME.match(entry.name)
        if not match:
            continue
        try:
            if match["host"] == host:
                dead = not process_alive(int(match["pid"]))
            else:
                dead = time.time() - entry.stat().st_mtime > OTHER_HOST_TEMP_SECONDS
            if dead:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                removed.append(entry)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


@contextmanager
def atomic_file(path: Path, tmp: Path | None = None, commit: bool = True) -> Iterator[Path]:
    """Yield a temp path in `path`'s folder for a writer to fill; when the block ends normally the
    temp file is renamed onto `path` (a reader never sees half a file), on an error it is removed.

    `tmp`: a fixed temp name instead of a fresh unique one (every rank of a distributed job must
    name the same file); `commit=False`: this process takes part in the write but does not rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if commit:
            os.replace(tmp, path)
    except BaseException:
        if commit:
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, payload: bytes | str, fsync: bool = False) -> None:
    """Write `payload` (a str as UTF-8) through a temp file in the same folder and a rename: never
    half a file. `fsync`: flush it to disk before the rename."""
    from recbench.faults import no_space

    no_space(path)  # fault injection, off unless RECBENCH_NO_SPACE is set
    data = payload.encode() if isinstance(payload, str) else payload
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)


write_text_atomic = write_atomic  # the name the bench scripts use


def json_safe(value: Any) -> Any:
    """`value` with every NaN / inf float as None: standard JSON has neither, and a bare `NaN` in a record
    breaks jq, JavaScript and strict parsers. numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def nulls_to_nan(value: Any) -> Any:
    """The reverse for numeric parts of a record read back (metrics, curves): None -> NaN."""
    if isinstance(value, dict):
        return {key: nulls_to_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [nulls_to_nan(item) for item in value]
    return float("nan") if value is None else value


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """`payload` as indented, standard json (sorted keys; NaN / inf written as null) through `write_atomic`."""
    write_atomic(path, json.dumps(json_safe(payload), indent=1, sort_keys=True, default=str, allow_nan=False) + "\n")


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; when the block ends normally it replaces `path` whole.

    A process killed inside the block leaves `path` as it was (plus a hidden temp folder), so a
    reader never sees a folder with some of its files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(path.parent)  # what a killed writer of this folder (or a sibling) left
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), dir=path.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        swap_folder_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _put_back(old: Path | None, out_dir: Path) -> None:
    if old is not None and not out_dir.exists():
        os.replace(old, out_dir)


def swap_folder_into_place(tmp: Path, out_dir: Path, names: list[str] | None = None) -> None:
    """Rename the finished temp folder onto `out_dir`, replacing an older copy."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir.name, "old"), dir=out_dir.parent))
        os.replace(out_dir, old)  # renaming a folder onto an empty folder is allowed on POSIX
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # a concurrent writer put a folder there first; same config -> same bytes, so keep theirs
        names = [p.name for p in tmp.iterdir()] if names is None else names
        if not all((out_dir / name).exists() for name in names):
            _put_back(old, out_dir)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:  # interrupted between the two renames: the old copy goes back
        _put_back(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary_table(test_metrics: dict[str, float], title: str) -> str:
    """A small text table: one row per target (action), one column per metric."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in test_metrics.items():
        parts = key.split("/")
        if len(parts) != 3:  # test/<metric>/<target>
            continue
        rows.setdefault(parts[2], {})[parts[1]] = value
    columns = sorted({c for row in rows.values() for c in row})
    order = sorted(rows, key=lambda r: (r == "mean", r))
    width = max([len(r) for r in order] + [6])
    lines = [title, f"{'target':<{width}}  " + "  ".join(f"{c:>10}" for c in columns)]
    for name in order:
        cells = "  ".join(f"{rows[name][c]:>{len(c) if len(c) > 10 else 10}.4f}" if c in rows[name]
                          else f"{'-':>{max(len(c), 10)}}" for c in columns)
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)
