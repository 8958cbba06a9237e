"""What every dataset adapter shares: choosing the source, fingerprinting and caching.

An adapter subclass knows one dataset's real file format. It implements:
  - `required_files` / `optional_files`: file names expected in `raw_dir`;
  - `write_replica(out_dir)`: write the synthetic replica in the *same* file format;
  - `build(raw_dir)`: read + validate the files and return `Prepared` arrays;
  - `assemble(tables, split, rows, keys)`: turn a batch of row indices into a dict of tensors;
    `keys` (None: all) names the ones the model and heads read, and an adapter may skip the rest;
  - `produces`: the schemas (recbench/data/schema.py) its spec, row arrays and batches follow;
  - optionally `smoke_replica`: replica settings small enough for the dataset x model matrix test,
    and `text_corpus` / `text_tasks` when it has texts for the text stage (`text_embeddings=auto`).

This base class resolves `source` (auto | raw | synthetic), hashes the input files together with
the preprocessing config, and stores the built arrays under `cache_dir/<fingerprint>/` with an
atomic rename, so a failed or interrupted build never leaves a cache that looks complete.

Cache folder: one `array.<name>.npy` per array (memory-mapped copy-on-write on load: nothing is read
or copied until touched, and runs share the page cache; folders from before hold one `arrays.npz`,
still read), one `<name>.parquet` per side table and `meta.json`, written last, whose
`_manifest` holds the size and checksum (xxh3-128 when the `xxhash` package is importable, else
sha256) of every other file and of the metadata itself. Loading verifies the manifest first; a
missing, truncated, altered or unreadable file is reported as one warning line on stderr and the
folder is rebuilt and swapped in atomically. Files are not fsync'ed: after a power loss a cache may
be damaged, and the manifest is what catches that (the cache can always be rebuilt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recbench.data.schema import Schema
from recbench.errors import UserInputError
from recbench.records import atomic_folder, remove_dead_temps, swap_folder_into_place, temp_prefix

SOURCES = ("auto", "raw", "synthetic")
ARRAY_PREFIX = "array."  # cache layout: array.<name>.npy per array (older caches: arrays.npz)


@dataclasses.dataclass
class Prepared:
    """Built arrays, json-able metadata (feature spec, stats, fingerprint, source) and optional
    side tables (e.g. texts keyed by id, for the text stage) that do not fit a numeric array."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    frames: dict[str, pl.DataFrame] = dataclasses.field(default_factory=dict)


def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[index] for an index tensor of any shape, through `index_select` (2-3x faster than
    advanced indexing on CPU, the hot path of every batch's assembly)."""
    return values.index_select(0, index.reshape(-1)).view(*index.shape, *values.shape[1:])


def hash_files(paths: list[Path], chunk: int = 1 << 22) -> str:
    """sha256 over the names and bytes of the given files (content, not mtime)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


_ANNOUNCED: set[tuple[str, str]] = set()  # (dataset, raw folder) pairs whose banner this process printed


def banner(text: str, key: tuple[str, str] | None = None) -> None:
    """Print `text` framed: once per process for `key` (None: every call), and only in the first DDP
    process. Every DDP rank prepares the data and a sweep prepares it once per job; the run says it once."""
    if key is not None:
        if key in _ANNOUNCED:
            return
        _ANNOUNCED.add(key)
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return  # a DDP worker rank (Lightning sets these for the processes it starts): rank 0 says it
    line = "=" * 78
    print(f"\n{line}\n{text}\n{line}\n", file=sys.stderr, flush=True)


class DatasetAdapter:
    """Base class: source resolution + fingerprinted, atomic cache. Subclasses add the format."""

    name: str = "dataset"
    version: str = "1"  # bump when the build logic changes, so old caches are not reused
    required_files: tuple[str, ...] = ()
    optional_files: tuple[str, ...] = ()
    # the schemas (recbench/data/schema.py) this dataset's spec and batches follow; a model or task head
    # must accept one of them (checked before any data is read, and on the prepared data)
    produces: tuple[Schema, ...] = ()
    # `replica:` settings for the smallest replica a one-step smoke run can use (tests/test_matrix.py)
    smoke_replica: dict[str, Any] = {}

    def __init__(self, source: str, raw_dir: str, cache_dir: str, replica_dir: str,
                 use_cache: bool = True, *, text_embeddings: str | None = None, text: Any = None,
                 text_dir: str | None = None) -> None:
        if source not in SOURCES:
            raise UserInputError(f"data.source='{source}' is not one of {', '.join(SOURCES)}. "
                                 "Fix: pass data.source=auto|raw|synthetic")
        self.source = source
        self.raw_dir = Path(raw_dir)
        self.cache_dir = Path(cache_dir)
        self.replica_dir = Path(replica_dir)
        self.use_cache = use_cache
        # text embeddings: a folder (python -m recbench.text), "auto" (run or reuse the text stage on
        # this dataset, with conf/text_stage.yaml changed by `text`, under `text_dir`) or None
        self.text_embeddings, self.text, self.text_dir = text_embeddings, text, text_dir

    # ----------------------------------------------------------------- subclass hooks
    def has_text_corpus(self, prepared: Prepared) -> bool:
        """Whether this prepared data has texts for `text_embeddings=auto` (an adapter whose texts are
        optional says so here and explains the fallback)."""
        return True

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

    def assemble(self, tables: dict[str, torch.Tensor], split: str, rows: torch.Tensor,
                 keys: frozenset[str] | None = None) -> dict[str, torch.Tensor]:
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
        banner(f"recbench: no real {self.name} files in {self.raw_dir} -> using the SYNTHETIC replica.\n"
                f"Results are NOT comparable with published numbers. Put the real files there "
                f"(datasets/{self.name}/raw/README.md)\nor pass data.source=raw to make this an error.",
                key=(self.name, str(self.raw_dir.absolute())))
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
        """Resolve the source, then load the cache (verified against its manifest) or build it
        (atomically); a corrupt cache is rebuilt with a one-line warning."""
        for folder in (self.cache_dir, self.replica_dir):  # leftovers of killed writers, at every start
            remove_dead_temps(folder)
        source, files_dir = self.resolve_source()
        fingerprint = self.fingerprint(files_dir)
        target = self.cache_dir / fingerprint
        prepared = None
        if self.use_cache and target.exists():
            prepared, problem = load_verified(target)
            if problem:
                print(f"recbench: warning: cache {target} is corrupt ({problem}); rebuilding",
                      file=sys.stderr, flush=True)
        if prepared is None:
            print(f"recbench: building {self.name} arrays from {files_dir}", file=sys.stderr, flush=True)
            prepared = self.build(files_dir)
            prepared.meta.update(fingerprint=fingerprint)
            if self.use_cache:
                try:
                    _save_atomic(prepared, target)
                except OSError as error:  # disk full, read-only, quota: the temp folder is already gone
                    raise UserInputError(f"{target}: could not write the cache ({error.strerror or error}). Fix: free "
                                         "disk space there, point paths.datasets elsewhere, or pass "
                                         "data.use_cache=false") from None
        prepared.meta.update(source=source, files_dir=str(files_dir), fingerprint=fingerprint)
        prepared.meta["spec"]["schemas"] = [schema.name for schema in self.produces]
        if self.text_embeddings == "auto" and not self.has_text_corpus(prepared):
            self.text_embeddings = None  # the adapter said why (e.g. a fallback banner)
        if self.text_embeddings == "auto":  # this dataset's texts through the text stage, once
            from recbench.text.stage import embeddings_for

            self.text_embeddings = str(embeddings_for(self, prepared, self.text, self.text_dir or "models/text"))
        if self.text_embeddings:
            prepared.meta["text_embeddings"] = self.text_embeddings
        self.attach(prepared)
        return prepared


MANIFEST_KEY = "_manifest"  # inside meta.json: sizes and checksums of the cache folder's files


def _checksum_algorithm() -> str:
    try:
        import xxhash  # noqa: F401  (about 10x faster than sha256; comes with wandb)
    except ImportError:
        return "sha256"
    return "xxh3_128"


def file_checksum(path: Path, algorithm: str, chunk: int = 1 << 23) -> str:
    """Checksum of a file's bytes, read in chunks (`algorithm`: xxh3_128 or sha256)."""
    if algorithm == "xxh3_128":
        import xxhash

        digest = xxhash.xxh3_128()
    elif algorithm == "sha256":
        digest = hashlib.sha256()
    else:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _meta_checksum(meta: dict[str, Any]) -> str:
    """sha256 of the metadata as canonical json (stable under a json round trip)."""
    canonical = json.dumps(json.loads(json.dumps(meta, sort_keys=True)), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _manifest(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    algorithm = _checksum_algorithm()
    files = {path.name: {"size": path.stat().st_size, "checksum": file_checksum(path, algorithm)}
             for path in sorted(folder.iterdir()) if path.name != "meta.json"}
    return {"format": 1, "algorithm": algorithm, "files": files, "meta_sha256": _meta_checksum(meta)}


def verify_cache(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(metadata without its manifest, None) for an intact cache folder, else (None, "<file>: <problem>")."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    except FileNotFoundError:
        return None, "meta.json: missing"
    except (OSError, UnicodeDecodeError, ValueError):
        return None, "meta.json: unreadable or truncated"
    manifest = meta.pop(MANIFEST_KEY, None) if isinstance(meta, dict) else None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None, "meta.json: no checksum manifest (written by an older recbench or edited)"
    if manifest.get("meta_sha256") != _meta_checksum(meta):
        return None, "meta.json: checksum mismatch"
    algorithm = manifest.get("algorithm")
    listed = manifest["files"]
    for name, entry in sorted(listed.items()):
        path = Path(folder) / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None, f"{name}: missing"
        if size != entry.get("size"):
            return None, f"{name}: {size} bytes instead of {entry.get('size')}"
        try:
            if file_checksum(path, algorithm) != entry.get("checksum"):
                return None, f"{name}: checksum mismatch"
        except (ImportError, ValueError):
            return None, f"{name}: checksum algorithm {algorithm!r} unavailable"
        except OSError as error:
            return None, f"{name}: unreadable ({error.strerror or error})"
    extra = sorted(p.name for p in Path(folder).glob("*.parquet") if p.name not in listed)
    if extra:
        return None, f"{extra[0]}: not in the manifest"
    return meta, None


def load_verified(target: Path) -> tuple[Prepared | None, str | None]:
    """Load a cache folder after checking its manifest: (Prepared, None) or (None, "<file>: <problem>")."""
    meta, problem = verify_cache(target)
    if problem:
        return None, problem
    unreadable = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, pl.exceptions.PolarsError)
    path = target / "arrays.npz"
    try:
        if path.exists():  # caches written before the one-file-per-array layout
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        else:  # memory-mapped, copy-on-write: no read or copy up front, pages load when touched
            arrays = {}
            for path in sorted(target.glob(f"{ARRAY_PREFIX}*.npy")):
                arrays[path.name[len(ARRAY_PREFIX):-4]] = np.load(path, mmap_mode="c", allow_pickle=False)
        frames = {}
        for path in sorted(target.glob("*.parquet")):
            frames[path.stem] = pl.read_parquet(path)
    except unreadable as error:
        detail = str(error).strip().splitlines()
        return None, f"{path.name}: unreadable ({type(error).__name__}{': ' + detail[0] if detail else ''})"
    return Prepared(arrays=arrays, meta=meta, frames=frames), None


def _save_atomic(prepared: Prepared, target: Path) -> None:
    """Write the cache folder into a temp folder (meta.json with the manifest last), then rename it
    into place; a corrupt folder already there is replaced, an intact one (a concurrent run
    finished first: same fingerprint, same content) is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        for name, array in prepared.arrays.items():  # one .npy per array: memory-mapped on load
            np.save(tmp / f"{ARRAY_PREFIX}{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        for name, frame in prepared.frames.items():
            frame.write_parquet(tmp / f"{name}.parquet")
        meta = {**prepared.meta, MANIFEST_KEY: _manifest(tmp, prepared.meta)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if target.exists() and verify_cache(target)[1] is None:
            shutil.rmtree(tmp)
            return
        swap_folder_into_place(tmp, target, [p.name for p in tmp.iterdir()])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(target: Path) -> Prepared:
    """Load a cache folder, verified (raises ValueError naming the problem when it is corrupt)."""
    prepared, problem = load_verified(target)
    if problem:
        raise ValueError(f"cache {target} is corrupt ({problem})")
    return prepared


def write_csv_folder(out_dir: Path, tables: dict[str, pl.DataFrame]) -> list[Path]:
    """Write `{file name: table}` as CSV files into `out_dir` atomically; return their paths.

    The files go into a temporary folder beside `out_dir`, which is then renamed into place (an
    older `out_dir` is replaced), so a reader never sees a half-written replica."""
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        for name, table in tables.items():
            table.write_csv(tmp / name)
    return [out_dir / name for name in tables]
