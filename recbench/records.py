"""Results records: one `results.json` per run, written atomically, plus the console summary."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
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
