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


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`path.write_text(text)` through a temp file and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
