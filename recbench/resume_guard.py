"""`resume=true` continues only what it can continue: the same settings and an intact checkpoint.

A run writes `run_config.json` (its resolved config) when it starts and a sha256 of every `last.ckpt` it
saves (`last.ckpt.sha256`, written through `.sha256.next` so a kill never leaves a stale stamp). On resume the current config must match, except the keys in RESUMABLE
(where things live, how progress is shown), and the checkpoint must match its checksum and load. Any
mismatch is one line (exit 2) saying how to start fresh, before training touches anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recbench.errors import UserInputError
from recbench.report.collect import flatten_config
from recbench.records import json_safe, write_json_atomic

RUN_CONFIG = "run_config.json"
# keys (dotted prefixes) that may differ between the interrupted run and its resume
RESUMABLE = ("resume", "paths", "logger", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
             "trainer.enable_model_summary", "loader.num_workers", "loader.eval_batch_size", "data.raw_dir",
             "data.cache_dir", "data.replica_dir", "data.text_dir", "data.use_cache", "predictions", "tags")


def _kept(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten_config(config).items()
            if not any(k == skip or k.startswith(skip + ".") for skip in RESUMABLE)}


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def as_saved(config: dict[str, Any]) -> dict[str, Any]:
    """The config as run_config.json holds it (standard JSON: inf / NaN as null), for comparing like with like."""
    return json.loads(json.dumps(json_safe(config), default=str))


def remember_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_json_atomic(run_dir / RUN_CONFIG, as_saved(config))


def verify(run_dir: Path, config: dict[str, Any], checkpoint: Path) -> None:
    """Raise UserInputError (one line) unless `checkpoint` can continue the run in `run_dir` with `config`."""
    fresh = f"Fix: start fresh (drop resume=true, or delete {checkpoint.parent})"
    saved_path = run_dir / RUN_CONFIG
    if saved_path.exists():
        saved = _kept(json.loads(saved_path.read_text()))
        now = _kept(as_saved(config))
        changed = [f"{k}: {saved.get(k, '<unset>')} -> {now.get(k, '<unset>')}"
                   for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if changed:
            shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise UserInputError(f"resume=true: {run_dir} was made with other settings ({shown}), so it cannot be "
                                 f"continued. {fresh}")
    stamps = [p.read_text().strip() for p in (checkpoint.with_name(checkpoint.name + ".sha256"),
                                              checkpoint.with_name(checkpoint.name + ".sha256.next")) if p.exists()]
    if stamps and sha256(checkpoint) not in stamps:  # .next: a kill between the checkpoint's and the stamp's rename
        raise UserInputError(f"resume=true: {checkpoint} does not match its checksum (damaged or replaced). {fresh}")
    import torch

    try:
        torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file, checksum-verified above
    except Exception as error:  # truncated, random bytes, not a checkpoint
        raise UserInputError(f"resume=true: {checkpoint} cannot be loaded ({type(error).__name__}). {fresh}") from None
