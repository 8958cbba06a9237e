"""Results records: one `results.json` per run, written atomically, plus the console summary."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
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


@contextmanager
def atomic_file(path: Path, tmp: Path | None = None, commit: bool = True) -> Iterator[Path]:
    """Yield a temp path in `path`'s folder for a writer to fill; when the block ends normally the
    temp file is renamed onto `path` (a reader never sees half a file), on an error it is removed.

    `tmp`: a fixed temp name instead of a fresh unique one (every rank of a distributed job must
    name the same file); `commit=False`: this process takes part in the write but does not rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
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


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """`payload` as indented json (sorted keys) through `write_atomic`."""
    write_atomic(path, json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; when the block ends normally it replaces `path` whole.

    A process killed inside the block leaves `path` as it was (plus a hidden temp folder), so a
    reader never sees a folder with some of its files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        swap_folder_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_folder_into_place(tmp: Path, out_dir: Path, names: list[str] | None = None) -> None:
    """Rename the finished temp folder onto `out_dir`, replacing an older copy."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old)  # renaming a folder onto an empty folder is allowed on POSIX
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # a concurrent writer put a folder there first; same config -> same bytes, so keep theirs
        names = [p.name for p in tmp.iterdir()] if names is None else names
        if not all((out_dir / name).exists() for name in names):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
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
