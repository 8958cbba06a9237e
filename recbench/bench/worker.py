"""`python -m recbench.bench.worker <job.json>`: one measured job in a fresh process.

Kinds:
  train    compose the main config from `overrides` and run the CLI's own `train()` (fit with
           validation + best checkpoint, then test); result: per-epoch training samples/s, the
           seconds and samples of every training step (one step = from the end of the previous
           step to the end of this one: batch assembly + forward + backward + optimizer), which
           id tables were updated row-wise, metrics, this process's peak RSS.
  prepare  build or reload a dataset adapter's arrays (`adapter.prepare()`) with a phase breakdown
           (content hash of the raw files, build, cache write, cache read).
The result is written as json to `job["result"]`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from recbench.bench.common import peak_rss_self_gib
from recbench.records import write_text_atomic


def compose(overrides: list[str]) -> tuple[Any, dict[str, str]]:
    """The CLI's config for these overrides (without the `hydra` node) and the group choices."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from recbench import config  # noqa: F401  (registers resolvers)
    from recbench.__main__ import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def run_train(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    import recbench.callbacks as callbacks
    import recbench.module as module
    from recbench.__main__ import quiet_lightning, train

    torch.set_num_threads(job["threads"])
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg, choices = compose(list(job["overrides"]))
    if cfg.get("logger") and "save_dir" in cfg.logger:  # the CLI resolves it to the Hydra run dir
        cfg.logger.save_dir = str(run_dir)

    # train() builds its own TrainThroughput; keep a handle on it for the per-epoch rates
    created: list[Any] = []
    modules: list[Any] = []

    class RecordingThroughput(callbacks.TrainThroughput):
        def __init__(self) -> None:
            super().__init__()
            self.step_seconds: list[list[float]] = []  # per epoch, per step
            self.step_samples: list[list[int]] = []
            self._last_end = 0.0
            created.append(self)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            super().on_train_epoch_start(trainer, pl_module)
            self.step_seconds.append([])
            self.step_samples.append([])
            self._last_end = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            now = time.perf_counter()
            self.step_seconds[-1].append(now - self._last_end)
            self.step_samples[-1].append(len(next(iter(batch.values()))))
            self._last_end = now

        def on_validation_end(self, trainer, pl_module) -> None:  # a mid-epoch validation is no step's time
            super().on_validation_end(trainer, pl_module)
            self._last_end = time.perf_counter()

    class RecordingModule(module.RecModule):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            modules.append(self)

    callbacks.TrainThroughput = RecordingThroughput
    module.RecModule = RecordingModule  # train() imports it from recbench.module at call time
    quiet_lightning()
    record = train(cfg, run_dir, choices)
    rates = record.get("train_epoch_samples_per_second") or (created[-1].epoch_rates if created else [])
    return {"step_seconds": created[-1].step_seconds if created else [],
            "step_samples": created[-1].step_samples if created else [],
            "row_updates": getattr(modules[-1], "row_updates", None) if modules else None,
            "embedding_rows": (sum(m.num_embeddings for m in modules[-1].net.modules() if isinstance(m, torch.nn.Embedding))
                               if modules else None),
            "keep_freed_memory": bool(cfg.get("keep_freed_memory", True)), "model": choices.get("model"), "data": choices.get("data"), "task": choices.get("task"),
            "epoch_samples_per_second": list(rates), "metrics": record["metrics"],
            "parameters": record["parameters"], "epochs_run": record["epochs_run"],
            "data_source": record["data_source"], "dataset_fingerprint": record["dataset_fingerprint"],
            "dataset_stats": record["dataset_stats"], "train_seconds": record["train_seconds"],
            "threads": torch.get_num_threads(), "peak_rss_self_gib": peak_rss_self_gib()}


def run_prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Time `adapter.prepare()`; with an empty cache that is hash + build + cache write."""
    import polars as pl
    from hydra.utils import instantiate

    import recbench.data.base as base

    cfg, _ = compose(list(job["overrides"]))
    adapter = instantiate(cfg.data)
    phases: dict[str, float] = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    adapter.fingerprint = timed("hash_raw_files", adapter.fingerprint)
    adapter.build = timed("build", adapter.build)
    base._save_atomic = timed("write_cache", base._save_atomic)
    for name in ("load_verified", "_load"):  # whichever the base class's prepare() calls
        if hasattr(base, name):
            setattr(base, name, timed("read_cache", getattr(base, name)))
    if hasattr(base, "verify_cache"):  # checksums of the cache files (inside read_cache)
        base.verify_cache = timed("verify_cache_checksums", base.verify_cache)
    started = time.perf_counter()
    prepared = adapter.prepare()
    total = time.perf_counter() - started
    arrays = prepared.arrays
    return {"seconds": total, "phases": phases, "fingerprint": prepared.meta["fingerprint"],
            "source": prepared.meta["source"], "stats": prepared.meta.get("stats", {}),
            "array_bytes": int(sum(a.nbytes for a in arrays.values())), "arrays": len(arrays),
            "polars_threads": pl.thread_pool_size(), "peak_rss_self_gib": peak_rss_self_gib()}


KINDS = {"train": run_train, "prepare": run_prepare}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    if job.get("cpus"):  # pin to the first N cores before torch / polars start their thread pools
        os.sched_setaffinity(0, range(int(job["cpus"])))
        os.environ.setdefault("POLARS_MAX_THREADS", str(job["cpus"]))
    result = KINDS[job["kind"]](job)
    write_text_atomic(Path(job["result"]), json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
