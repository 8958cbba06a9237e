"""What every dataset adapter shares: choosing the source, fingerprinting and caching.

An adapter subclass knows one dataset's real file format. It implements:
  - `required_files` / `optional_files`: file names expected in `raw_dir`;
  - `write_replica(out_dir)`: write the synthetic replica in the *same* file format;
  - `build(raw_dir)`: read + validate the files and return `Prepared` arrays;
  - `assemble(tables, split, rows)`: turn a batch of row indices into a dict of tensors.

This base class resolves `source` (auto | raw | synthetic), hashes the input files together with
the preprocessing config, and stores the built arrays under `cache_dir/<fingerprint>/` with an
atomic rename, so a failed or interrupted build never leaves a cache that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recbench.errors import UserInputError

SOURCES = ("auto", "raw", "synthetic")
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Prepared:
    """Built arrays, json-able metadata (feature spec, stats, fingerprint, source) and optional
    side tables (e.g. texts keyed by id, for the text stage) that do not fit a numeric array."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    frames: dict[str, pl.DataFrame] = dataclasses.field(default_factory=dict)


def hash_files(paths: list[Path], chunk: int = 1 << 22) -> str:
    """sha256 over the names and bytes of the given files (content, not mtime)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _banner(text: str) -> None:
    line = "=" * 78
    print(f"\n{line}\n{text}\n{line}\n", file=sys.stderr, flush=True)


class DatasetAdapter:
    """Base class: source resolution + fingerprinted, atomic cache. Subclasses add the format."""

    name: str = "dataset"
    version: str = "1"  # bump when the build logic changes, so old caches are not reused
    required_files: tuple[str, ...] = ()
    optional_files: tuple[str, ...] = ()

    def __init__(self, source: str, raw_dir: str, cache_dir: str, replica_dir: str,
                 use_cache: bool = True) -> None:
        if source not in SOURCES:
            raise UserInputError(f"data.source='{source}' is not one of {', '.join(SOURCES)}. "
                                 "Fix: pass data.source=auto|raw|synthetic")
        self.source = source
        self.raw_dir = Path(raw_dir)
        self.cache_dir = Path(cache_dir)
        self.replica_dir = Path(replica_dir)
        self.use_cache = use_cache

    # ----------------------------------------------------------------- subclass hooks
    def preprocess_config(self) -> dict[str, Any]:
        """Every setting that changes the built arrays (part of the fingerprint)."""
        raise NotImplementedError

    def replica_config(self) -> dict[str, Any]:
        """Every setting that changes the replica's files."""
        raise NotImplementedError

    def write_replica(self, out_dir: Path) -> None:
        raise NotImplementedError

    def build(self, raw_dir: Path) -> Prepared:
        raise NotImplementedError

    def attach(self, prepared: Prepared) -> None:
        """Add inputs that live outside the cache (e.g. exported embeddings); default: nothing."""

    def assemble(self, tables: dict[str, torch.Tensor], split: str,
                 rows: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ----------------------------------------------------------------- shared machinery
    def missing_files(self, directory: Path) -> list[str]:
        return [name for name in self.required_files if not (directory / name).is_file()]

    def resolve_source(self) -> tuple[str, Path]:
        """Return ('raw' | 'synthetic', directory holding the files to read)."""
        if self.source == "synthetic":
            return "synthetic", self._ensure_replica()
        missing = self.missing_files(self.raw_dir)
        if not missing:
            return "raw", self.raw_dir
        if self.source == "raw":
            raise UserInputError(
                f"{self.raw_dir / missing[0]}: file not found (data.source=raw). Fix: put "
                f"{', '.join(self.required_files)} in {self.raw_dir} (see datasets/{self.name}/raw/README.md) "
                f"or pass data.raw_dir=<folder holding them>")
        _banner(f"recbench: no real {self.name} files in {self.raw_dir} -> using the SYNTHETIC replica.\n"
                f"Results are NOT comparable with published numbers. Put the real files there "
                f"(datasets/{self.name}/raw/README.md)\nor pass data.source=raw to make this an error.")
        return "synthetic", self._ensure_replica()

    def _ensure_replica(self) -> Path:
        key = hashlib.sha256(json.dumps(self.replica_config(), sort_keys=True).encode()).hexdigest()[:16]
        out_dir = self.replica_dir / key
        if not self.missing_files(out_dir):
            return out_dir
        print(f"recbench: writing the {self.name} replica to {out_dir}", file=sys.stderr, flush=True)
        self.write_replica(out_dir)
        return out_dir

    def fingerprint(self, files_dir: Path) -> str:
        present = [files_dir / n for n in self.required_files + self.optional_files
                   if (files_dir / n).is_file()]
        config = json.dumps({"adapter": self.name, "version": self.version,
                             "preprocess": self.preprocess_config()}, sort_keys=True)
        return hashlib.sha256((hash_files(present) + config).encode()).hexdigest()[:20]

    def prepare(self) -> Prepared:
        """Resolve the source, then load the cache or build it (atomically)."""
        source, files_dir = self.resolve_source()
        fingerprint = self.fingerprint(files_dir)
        target = self.cache_dir / fingerprint
        if self.use_cache and (target / "meta.json").is_file():
            prepared = _load(target)
        else:
            print(f"recbench: building {self.name} arrays from {files_dir}", file=sys.stderr, flush=True)
            prepared = self.build(files_dir)
            prepared.meta.update(fingerprint=fingerprint)
            if self.use_cache:
                _save_atomic(prepared, target)
        prepared.meta.update(source=source, files_dir=str(files_dir), fingerprint=fingerprint)
        self.attach(prepared)
        return prepared


def _save_atomic(prepared: Prepared, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        np.savez(tmp / "arrays.npz", **prepared.arrays)
        for name, frame in prepared.frames.items():
            frame.write_parquet(tmp / f"{name}.parquet")
        (tmp / "meta.json").write_text(json.dumps(prepared.meta, indent=1, sort_keys=True))
        if target.exists():  # a concurrent run finished first; its content is identical
            shutil.rmtree(tmp)
            return
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(target: Path) -> Prepared:
    with np.load(target / "arrays.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    frames = {path.stem: pl.read_parquet(path) for path in sorted(target.glob("*.parquet"))}
    return Prepared(arrays=arrays, meta=json.loads((target / "meta.json").read_text()), frames=frames)


def write_csv_folder(out_dir: Path, tables: dict[str, pl.DataFrame]) -> list[Path]:
    """Write `{file name: table}` as CSV files into `out_dir` atomically; return their paths.

    The files go into a temporary folder beside `out_dir`, which is then renamed into place (an
    older `out_dir` is replaced), so a reader never sees a half-written replica."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        for name, table in tables.items():
            table.write_csv(tmp / name)
        _swap_into_place(tmp, out_dir, list(tables))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / name for name in tables]


def _swap_into_place(tmp: Path, out_dir: Path, names: list[str]) -> None:
    """Rename the finished temp folder onto `out_dir`, replacing an older copy."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old)  # renaming a folder onto an empty folder is allowed on POSIX
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # a concurrent writer put a folder there first; same config -> same bytes, so keep theirs
        if not all((out_dir / name).is_file() for name in names):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
