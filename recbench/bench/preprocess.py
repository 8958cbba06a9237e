"""(b) The Tmall adapter on a full-size log: CSV -> cached arrays (wall time, peak RSS), then the
cached reload, each in a fresh process pinned to `cpus` cores.

The log is the synthetic replica at the real file's size (54.9M rows, written once by
recbench/bench/replica.py and kept under the bench work folder), plus the real file when
datasets/tmall/raw/ holds it. Each run starts from an empty cache folder, so "build" is the whole
`adapter.prepare()`: content hash of the raw files, read + validate, episodes, split, vocabularies,
labels, atomic cache write. "reload" is `prepare()` again in a new process: hash + cache read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from recbench.bench.common import REPO, fmt, run_measured, table, worker_command
from recbench.bench.replica import FULL_SIZE, write_full_size
from recbench.data.tmall_replica import LOG_FILE, TmallReplicaConfig

TARGET_BUILD_SECONDS = 120.0
TARGET_BUILD_GIB = 8.0
TARGET_RELOAD_SECONDS = 10.0
QUICK = dataclasses.replace(FULL_SIZE, n_users=2_000, n_items=20_000)  # ~0.26M rows


def replica_folder(work: Path, config: TmallReplicaConfig) -> Path:
    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return work / "tmall_log" / key


def measure(raw_dir: Path, work: Path, name: str, cpus: int, threads: int) -> dict[str, Any]:
    cache = work / "tmall_cache" / name
    shutil.rmtree(cache, ignore_errors=True)
    overrides = ["data=tmall", "data.source=raw", f"data.raw_dir={raw_dir}", f"data.cache_dir={cache}",
                 "data.use_cache=true"]
    out: dict[str, Any] = {"raw_dir": str(raw_dir), "log_bytes": (raw_dir / LOG_FILE).stat().st_size}
    for step in ("build", "reload"):
        folder = work / "runs" / f"preprocess_{name}_{step}"
        job = {"kind": "prepare", "overrides": overrides, "cpus": cpus, "threads": threads,
               "result": str(folder / "result.json")}
        out[step] = run_measured(worker_command(job, folder / "job.json"), folder / "result.json", folder / "log.txt")
    out["rows"] = out["build"]["stats"].get("rows")
    out["episodes"] = out["build"]["stats"].get("episodes")
    shutil.rmtree(cache, ignore_errors=True)  # several GiB
    return out


def run(work: Path, quick: bool, log, cpus: int, threads: int) -> dict[str, Any]:
    config = QUICK if quick else FULL_SIZE
    folder = replica_folder(work, config)
    figures: dict[str, Any] = {"cpus": cpus, "replica_config": config.to_dict(), "logs": {}}
    if not (folder / LOG_FILE).is_file():
        log(f"bench preprocess: writing the Tmall replica log ({config.n_users:,} users) to {folder}")
        figures["replica_write"] = write_full_size(folder, config, log=log)
    log("bench preprocess: adapter build + reload on the replica log")
    figures["logs"]["replica"] = measure(folder, work, "replica", cpus, threads)
    real = REPO / "datasets" / "tmall" / "raw"
    if not quick and (real / LOG_FILE).is_file():
        log("bench preprocess: adapter build + reload on the real log")
        figures["logs"]["real"] = measure(real, work, "real", cpus, threads)
    return figures


def report(figures: dict[str, Any]) -> str:
    rows = []
    for name, entry in figures["logs"].items():
        build, reload = entry["build"], entry["reload"]
        # targets on adapter.prepare() itself; the process wall adds interpreter and import start-up
        ok = (build["seconds"] < TARGET_BUILD_SECONDS and build["peak_tree_rss_gib"] < TARGET_BUILD_GIB
              and reload["seconds"] < TARGET_RELOAD_SECONDS)
        phases = ", ".join(f"{k} {v:.1f}" for k, v in build["phases"].items())
        rows.append([name, fmt(entry["rows"]), f"{entry['log_bytes'] / 2**30:.2f}",
                     f"{build['seconds']:.1f} ({build['wall_seconds']:.0f})", fmt(build["peak_tree_rss_gib"], 2),
                     f"{reload['seconds']:.1f} ({reload['wall_seconds']:.0f})", fmt(reload["peak_tree_rss_gib"], 2),
                     phases, "ok" if ok else "MISS"])
    title = (f"(b) Tmall adapter, CSV -> cached arrays, {figures['cpus']} cores; targets: build < "
             f"{TARGET_BUILD_SECONDS:.0f} s and < {TARGET_BUILD_GIB:.0f} GiB, reload < {TARGET_RELOAD_SECONDS:.0f} s")
    return table(title, ["log", "rows", "CSV GiB", "build s (process)", "build GiB", "reload s (process)", "reload GiB",
                         "build phases (s)", "target"], rows)
