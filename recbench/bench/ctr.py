"""(a) recbench vs FuxiCTR: DIN and DeepFM on the same CTR samples, same settings.

Task: Tmall episodes (recbench/data/tmall.py), label = purchase within the label horizon
(conf/task/ctr.yaml); features = user, age, gender, target item/cat/seller/brand and the user's last
`history_length` earlier-day episodes' item and cat ids. recbench trains through its CLI path
(`recbench.__main__.train`: RecDataModule index batches, RecModule with Adam + SparseAdam).
The SAME rows (train / valid / test, in order) are exported with recbench's own id indices as
string tokens (so FuxiCTR's train-split vocabularies hold the same ids; ids unseen in training map
to one OOV row on both sides) to parquet, with a generated FuxiCTR dataset/model yaml, and
benchmarks/fuxictr_run.py trains FuxiCTR 2.3.x on them in its own virtual environment.

Matched: embedding dim, MLP and attention sizes, batch size, Adam learning rate, epochs, torch
threads, seed, gradient-norm clip 10, constant learning rate (FuxiCTR's reduce-on-plateau off),
no early stop, best-validation-AUC weights for the test. The optimizer: FuxiCTR runs dense Adam over
all parameters; recbench by default picks per id table by its size (optimizer.sparse_min_rows:
dense Adam below it, which the Tmall table is, SparseAdam rows above), and also runs with every
table row-wise (SparseAdam) and explicitly dense. Throughput = training samples / second of each epoch's training loop (data pipeline
included, validation excluded), median of the epochs after `warmup`. recbench keeps freed memory in
the process (`keep_freed_memory`, recbench/allocator.py); one extra FuxiCTR run per model gets the
same glibc settings through GLIBC_TUNABLES, so the table also shows the ratio without that edge. Test metrics for both come
from recbench.metrics on the same test rows (FuxiCTR's predictions are matched by row id).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from recbench.bench.common import (
    REPO,
    JobFailed,
    fmt,
    run_measured,
    table,
    timed_median,
    worker_command,
)
from recbench.records import write_text_atomic

FUXICTR_VERSION = "2.3.10"
FUXICTR_PACKAGES = ("torch==2.13.0", f"fuxictr=={FUXICTR_VERSION}", "polars<2")  # 2.3.x calls polars 1.x API
VENV = REPO / "benchmarks" / ".venv-fuxictr"
RUNNER = REPO / "benchmarks" / "fuxictr_run.py"
SINGLE_FIELDS = ("user", "age", "gender", "item", "cat", "seller", "brand")
TARGET_AUC_GAP = 0.002
TARGET_RATIO = 2.0
# recbench's default (optimizer.sparse_min_rows, conf/optimizer/adam.yaml: id tables below that many rows
# join the dense Adam, larger ones are updated row-wise by SparseAdam; the fused Tmall table here is
# below it), every table row-wise by SparseAdam (the default before the per-size choice), one dense
# Adam over every parameter as FuxiCTR (the matched comparison; on this workload the same optimizer as
# the default), and that one with compile=true (torch.compile: its one-off compile falls in the
# warm-up epoch, see wall_seconds)
RECBENCH_VARIANTS: dict[str, tuple[str, ...]] = {
    "recbench": (), "recbench_sparse": ("optimizer.sparse_min_rows=0",),
    "recbench_dense": ("model.net.sparse_embeddings=false",),
    "recbench_dense_compiled": ("model.net.sparse_embeddings=false", "compile=true")}
LABELS = {"recbench": "recbench (default: optimizer by table size)",
          "recbench_sparse": "recbench (SparseAdam rows, every table)",
          "recbench_dense": "recbench (dense Adam, as FuxiCTR)",
          "recbench_dense_compiled": "recbench (dense Adam, compile=true)",
          "fuxictr": "FuxiCTR", "fuxictr_initfix": "FuxiCTR, LR init fixed",
          "fuxictr_malloc": "FuxiCTR, malloc kept as recbench's"}
# recbench keeps freed memory in the process (recbench/allocator.py); FuxiCTR gets the same glibc
# settings through the environment in one extra run, so the table shows what that setting alone is worth
FUXICTR_MALLOC_ENV = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432"}


@dataclasses.dataclass(frozen=True)
class CTRSettings:
    """Everything both frameworks share; one place, so the two sides cannot drift apart."""

    n_users: int = 10_000            # replica size (data.replica.*)
    n_items: int = 50_000
    episodes_per_user: float = 40.0
    label: str = "purchase"
    history_fields: tuple[str, ...] = ("item", "cat")
    embedding_dim: int = 16
    mlp_hidden: tuple[int, ...] = (256, 128)
    attention_hidden: tuple[int, ...] = (64,)
    batch_size: int = 4096
    learning_rate: float = 1e-3
    epochs: int = 6                  # 1 warm-up + 5 timed
    warmup: int = 1
    seed: int = 1

    @classmethod
    def quick(cls) -> "CTRSettings":
        return cls(n_users=150, n_items=1500, episodes_per_user=15.0, batch_size=1024, epochs=3)


def listing(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def data_overrides(settings: CTRSettings, source: str) -> list[str]:
    overrides = ["data=tmall", f"data.source={source}", f"seed={settings.seed}"]
    if source == "synthetic":
        overrides += [f"data.replica.n_users={settings.n_users}", f"data.replica.n_items={settings.n_items}",
                      f"data.replica.episodes_per_user={settings.episodes_per_user}"]
    return overrides


def net_overrides(settings: Any, model: str, history_fields: Sequence[str]) -> list[str]:
    """The network settings both benchmarks give recbench's DIN / DeepFM (the same as FuxiCTR's side)."""
    net = [f"model.net.embedding_dim={settings.embedding_dim}", f"model.net.mlp_hidden={listing(settings.mlp_hidden)}",
           f"model.net.history_fields={listing(history_fields)}"]
    if model == "din":
        net += [f"model.net.attention_hidden={listing(settings.attention_hidden)}"]
    return net


def recbench_overrides(settings: CTRSettings, model: str, source: str, run_dir: Path) -> list[str]:
    net = net_overrides(settings, model, settings.history_fields)
    return [f"model={model}", *data_overrides(settings, source), "task=ctr", f"task.heads.ctr.label={settings.label}",
            *net, f"loader.batch_size={settings.batch_size}", f"loader.eval_batch_size={settings.batch_size}",
            f"optimizer.dense.lr={settings.learning_rate}", f"optimizer.sparse.lr={settings.learning_rate}",
            "optimizer.gradient_clip=10.0", f"trainer.max_epochs={settings.epochs}",
            f"early_stopping.patience={settings.epochs + 1}", "trainer.enable_progress_bar=false",
            f"paths.experiments={run_dir.parent}"]


# ---------------------------------------------------------------------- the shared samples
def prepare_data(settings: CTRSettings, source: str):
    """The adapter's arrays for these settings (built once; the training runs reuse the cache)."""
    from hydra.utils import instantiate

    from recbench.bench.worker import compose

    cfg, _ = compose(["model=din", *data_overrides(settings, source)])
    adapter = instantiate(cfg.data)
    return adapter, adapter.prepare()


def _joined(ids: np.ndarray, mask: np.ndarray):
    """Rows of [N, L] ids -> '^'-joined strings of the valid entries (oldest first; '' if none)."""
    import polars as pl

    frame = pl.DataFrame({f"h{j}": np.where(mask[:, j], ids[:, j], -1) for j in range(ids.shape[1])})
    parts = [pl.when(pl.col(c) >= 0).then(pl.col(c).cast(pl.String)) for c in frame.columns]
    return frame.select(pl.concat_str(parts, separator="^", ignore_nulls=True).alias("joined")).to_series()


def export_for_fuxictr(adapter, prepared, settings: CTRSettings, out_dir: Path, chunk: int = 1 << 16) -> dict[str, Any]:
    """Write train/valid/test.parquet (string tokens, '^'-joined histories, label, row id) and
    return the paths plus each split's labels and GAUC groups (for scoring FuxiCTR's predictions)."""
    import polars as pl
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}
    column = list(prepared.meta["spec"]["target_actions"]).index(settings.label)
    info: dict[str, Any] = {"files": {}, "rows": {}, "positive_rate": {}, "labels": {}, "groups": {}}
    for split in ("train", "valid", "test"):
        n = len(tables[f"{split}_rows"])
        frames, labels, groups = [], [], []
        for start in range(0, n, chunk):
            rows = torch.arange(start, min(n, start + chunk))
            batch = adapter.assemble(tables, split, rows)
            mask = batch["hist_mask"].numpy()
            data = {f: batch[f].numpy().astype(str) for f in SINGLE_FIELDS}
            data.update({f"hist_{f}": _joined(batch[f"hist_{f}"].numpy(), mask) for f in settings.history_fields})
            label = batch["label_action"][:, column].numpy().astype(np.float64)
            data.update(label=label, row=rows.numpy().astype(np.int64))
            frames.append(pl.DataFrame(data))
            labels.append(label)
            groups.append(batch["group"].numpy())
        path = out_dir / f"{split}.parquet"
        tmp = path.with_suffix(".tmp")
        pl.concat(frames).write_parquet(tmp)
        tmp.replace(path)
        info["files"][split] = str(path)
        info["rows"][split] = n
        info["labels"][split] = np.concatenate(labels)
        info["groups"][split] = np.concatenate(groups)
        info["positive_rate"][split] = float(info["labels"][split].mean())
    return info


def fuxictr_models(settings, dataset_id: str, model_root: Path, targets: list[str], sequences: list[str],
                   num_workers: int = 1) -> dict[str, Any]:
    """FuxiCTR's model_config.yaml entries: Base + DIN_recbench + DeepFM_recbench with `settings`'
    sizes, learning rate, batch size, epochs and seed (any object with CTRSettings' field names).
    DIN attends the sequence fields `sequences` with the target fields `targets` (one group)."""
    common = {"dataset_id": dataset_id, "loss": "binary_crossentropy", "metrics": ["logloss", "AUC"],
              "task": "binary_classification", "optimizer": "adam", "learning_rate": settings.learning_rate,
              "embedding_regularizer": 0, "net_regularizer": 0, "batch_size": settings.batch_size,
              "embedding_dim": settings.embedding_dim, "net_dropout": 0, "batch_norm": False,
              "epochs": settings.epochs, "shuffle": True, "seed": settings.seed, "monitor": "AUC",
              "monitor_mode": "max", "reduce_lr_on_plateau": False, "early_stop_patience": settings.epochs + 1}
    return {
        "Base": {"model_root": str(model_root) + "/", "num_workers": num_workers, "verbose": 0, "save_best_only": True,
                 "eval_steps": None, "debug_mode": False, "group_id": None, "use_features": None,
                 "feature_specs": None, "feature_config": None, "pickle_feature_encoder": True},
        "DIN_recbench": {"model": "DIN", **common, "dnn_hidden_units": list(settings.mlp_hidden),
                         "dnn_activations": "relu", "attention_hidden_units": list(settings.attention_hidden),
                         "attention_hidden_activations": "Dice", "attention_output_activation": None,
                         "attention_dropout": 0, "din_target_field": [list(targets)],
                         "din_sequence_field": [list(sequences)], "din_use_softmax": False,
                         "feature_specs": [{"name": h, "feature_encoder": None} for h in sequences]},
        "DeepFM_recbench": {"model": "DeepFM", **common, "hidden_units": list(settings.mlp_hidden),
                            "hidden_activations": "relu"},
    }


def write_fuxictr_config(settings: CTRSettings, config_dir: Path, dataset_id: str, files: dict[str, str],
                         history_length: int, data_root: Path, model_root: Path) -> dict[str, str]:
    """FuxiCTR's two config files (dataset_config.yaml, model_config.yaml); returns expid per model."""
    import yaml

    config_dir.mkdir(parents=True, exist_ok=True)
    sequences = [{"name": f"hist_{f}", "active": True, "dtype": "str", "type": "sequence", "splitter": "^",
                  "max_len": history_length, "padding": "pre", "share_embedding": f}
                 for f in settings.history_fields]
    dataset = {dataset_id: {
        "data_root": str(data_root) + "/", "data_format": "parquet",
        "train_data": files["train"], "valid_data": files["valid"], "test_data": files["test"],
        "min_categr_count": 1,
        "feature_cols": [{"name": list(SINGLE_FIELDS), "active": True, "dtype": "str", "type": "categorical"},
                         *sequences,
                         {"name": "row", "active": True, "dtype": "int", "type": "meta", "remap": False}],
        "label_col": {"name": "label", "dtype": "float"}}}
    history = [f"hist_{f}" for f in settings.history_fields]
    models = fuxictr_models(settings, dataset_id, model_root, list(settings.history_fields), history)
    write_text_atomic(config_dir / "dataset_config.yaml", yaml.safe_dump(dataset, sort_keys=False))
    write_text_atomic(config_dir / "model_config.yaml", yaml.safe_dump(models, sort_keys=False))
    return {"din": "DIN_recbench", "deepfm": "DeepFM_recbench"}


def export_dataset(settings: CTRSettings, source: str, root: Path, suffix: str = ""):
    """Build the CTR arrays once and export them with FuxiCTR configs under root/tmall_ctr_<fingerprint><suffix>.

    Returns (prepared, export info, FuxiCTR config dir, {model: expid}).
    """
    adapter, prepared = prepare_data(settings, source)
    name = f"tmall_ctr_{prepared.meta['fingerprint'][:12]}"
    export_dir = root / f"{name}{suffix}"
    info = export_for_fuxictr(adapter, prepared, settings, export_dir / "parquet")
    config_dir = export_dir / "config"
    expids = write_fuxictr_config(settings, config_dir, name, info["files"], adapter.history_length,
                                  export_dir / "data", export_dir / "checkpoints")
    return prepared, info, config_dir, expids


# ---------------------------------------------------------------------- FuxiCTR's environment
def ensure_fuxictr_venv(log) -> Path:
    """benchmarks/.venv-fuxictr with torch + fuxictr (made once; FuxiCTR is never a recbench dependency)."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", f"import fuxictr, ray; assert fuxictr.__version__ == '{FUXICTR_VERSION}'"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log(f"bench: creating {VENV} (pip install {' '.join(FUXICTR_PACKAGES)}; once, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *FUXICTR_PACKAGES],
                          capture_output=True, text=True)
    if done.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        raise JobFailed(f"could not install FuxiCTR into {VENV}:\n{done.stderr[-2000:]}")
    return python


# ---------------------------------------------------------------------- the comparison
def score(pred: np.ndarray, label: np.ndarray, group: np.ndarray) -> dict[str, float]:
    from recbench import metrics as M

    return {"auc": M.auc(pred, label), "gauc": M.gauc(pred, label, group), "logloss": M.logloss(pred, label)}


def run_recbench(settings: CTRSettings, model: str, source: str, work: Path, threads: int, cpus: int | None,
                 variant: str = "recbench", extra: tuple[str, ...] = ()) -> dict:
    run_dir = work / "runs" / f"{variant}_{model}_{source}"
    job = {"kind": "train", "overrides": [*recbench_overrides(settings, model, source, run_dir), *extra],
           "run_dir": str(run_dir), "threads": threads, "cpus": cpus, "result": str(run_dir / "bench_result.json")}
    result = run_measured(worker_command(job, run_dir / "job.json"), Path(job["result"]), run_dir / "log.txt")
    test = result["metrics"]["test"]
    result["test"] = {m: test.get(f"test/{m}/{settings.label}") for m in ("auc", "gauc", "logloss")}
    result["samples_per_second"] = timed_median(result["epoch_samples_per_second"], settings.warmup)
    return result


def run_fuxictr(python: Path, config_dir: Path, expid: str, work: Path, threads: int, cpus: int | None,
                labels: np.ndarray, groups: np.ndarray, settings: CTRSettings, fix_init: bool = False,
                malloc: bool = False) -> dict:
    name = expid + ("_initfix" if fix_init else "") + ("_malloc" if malloc else "")
    out = work / "runs" / f"fuxictr_{name}" / "result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [str(python), str(RUNNER), "--config-dir", str(config_dir), "--expid", expid,
               "--threads", str(threads), "--out", str(out)] + (["--fix-deepfm-init"] if fix_init else [])
    if cpus:
        command = ["taskset", "-c", f"0-{cpus - 1}", *command]
    result = run_measured(command, out, out.parent / "log.txt", env=FUXICTR_MALLOC_ENV if malloc else None)
    with np.load(result["predictions"]) as saved:
        pred = np.empty(len(labels))
        pred[saved["row"]] = saved["pred"]
        if len(saved["row"]) != len(labels) or len(np.unique(saved["row"])) != len(labels):
            raise JobFailed(f"FuxiCTR predicted {len(saved['row'])} test rows, expected {len(labels)}")
    result["test"] = score(pred, labels, groups)
    result["samples_per_second"] = timed_median(result["epoch_samples_per_second"], settings.warmup)
    return result


def run(settings: CTRSettings, work: Path, threads: int, with_fuxictr: bool, log, cpus: int | None = None,
        sources: tuple[str, ...] = ("synthetic",)) -> dict[str, Any]:
    python = ensure_fuxictr_venv(log) if with_fuxictr else None
    out: dict[str, Any] = {"settings": dataclasses.asdict(settings), "threads": threads,
                           "fuxictr_version": FUXICTR_VERSION if with_fuxictr else None, "datasets": {}}
    for source in sources:
        log(f"bench ctr: preparing Tmall CTR samples ({source})")
        prepared, info, config_dir, expids = export_dataset(settings, source, work / "fuxictr")
        fingerprint = prepared.meta["fingerprint"]
        entry: dict[str, Any] = {"fingerprint": fingerprint, "source": prepared.meta["source"],
                                 "rows": info["rows"], "positive_rate": info["positive_rate"],
                                 "fuxictr_config": str(config_dir), "models": {}}
        for model in ("din", "deepfm"):
            models: dict[str, Any] = {}
            variants = RECBENCH_VARIANTS if python is not None or settings.epochs > 3 else {"recbench": ()}
            for variant, extra in variants.items():
                log(f"bench ctr: {variant} {model} ({source})")
                rec = run_recbench(settings, model, source, work, threads, cpus, variant, extra)
                if rec["dataset_fingerprint"] != fingerprint:
                    raise JobFailed(f"recbench {model} trained on {rec['dataset_fingerprint']}, exported {fingerprint}")
                models[variant] = rec
            if python is not None:
                for fix in ([False, True] if model == "deepfm" else [False]):
                    log(f"bench ctr: FuxiCTR {model}{' (LR init fixed)' if fix else ''} ({source})")
                    models["fuxictr_initfix" if fix else "fuxictr"] = run_fuxictr(
                        python, config_dir, expids[model], work, threads, cpus, info["labels"]["test"],
                        info["groups"]["test"], settings, fix)
                log(f"bench ctr: FuxiCTR {model}, malloc kept as recbench's ({source})")
                models["fuxictr_malloc"] = run_fuxictr(
                    python, config_dir, expids[model], work, threads, cpus, info["labels"]["test"],
                    info["groups"]["test"], settings, model == "deepfm", malloc=True)
                reference = "fuxictr_initfix" if "fuxictr_initfix" in models else "fuxictr"
                for variant in variants:
                    rec, fx = models[variant], models[reference]
                    rec["vs_fuxictr"] = {"reference": reference,
                                         "ratio": rec["samples_per_second"] / fx["samples_per_second"],
                                         "auc_gap": rec["test"]["auc"] - fx["test"]["auc"],
                                         "ratio_vs_malloc_kept": (rec["samples_per_second"]
                                                                  / models["fuxictr_malloc"]["samples_per_second"])}
            entry["models"][model] = {k: _trim(v) for k, v in models.items()}
        out["datasets"][source] = entry
    return out


def _trim(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("samples_per_second", "epoch_samples_per_second", "test", "parameters", "peak_tree_rss_gib",
            "peak_tree_pss_gib", "pss_note",
            "peak_rss_self_gib", "wall_seconds", "vs_fuxictr", "preprocess_seconds",
            "test_fuxictr_metrics", "deepfm_init_fixed", "threads", "epochs_run", "train_samples", "train_seconds")
    return {k: result[k] for k in keep if k in result}


def report(figures: dict[str, Any]) -> str:
    rows = []
    for source, entry in figures["datasets"].items():
        for model, sides in entry["models"].items():
            for side, r in sides.items():
                versus = r.get("vs_fuxictr")
                ok = "" if versus is None else (
                    "ok" if versus["ratio"] >= TARGET_RATIO and abs(versus["auc_gap"]) <= TARGET_AUC_GAP else "MISS")
                rows.append([f"{model} ({source})", LABELS.get(side, side), fmt(r["samples_per_second"]),
                             fmt(r["test"]["auc"], 4), fmt(r["test"]["gauc"], 4), fmt(r["test"]["logloss"], 4),
                             fmt(r.get("peak_tree_pss_gib", r.get("peak_tree_rss_gib")), 2),
                             "-" if versus is None else f"{versus['ratio']:.2f}x",
                             "-" if versus is None else f"{versus['auc_gap']:+.4f}",
                             "-" if versus is None else f"{versus['ratio_vs_malloc_kept']:.2f}x", ok])
    s = figures["settings"]
    title = (f"(a) CTR, Tmall purchase: emb {s['embedding_dim']}, MLP {s['mlp_hidden']}, batch {s['batch_size']}, "
             f"Adam {s['learning_rate']}, {s['epochs']} epochs (median of the last {s['epochs'] - s['warmup']}), "
             f"{figures['threads']} threads; recbench vs FuxiCTR (DeepFM: the LR-init-fixed run); targets: "
             f"ratio >= {TARGET_RATIO}x, |AUC gap| <= {TARGET_AUC_GAP}")
    return table(title, ["model", "framework", "train samples/s", "test AUC", "GAUC", "logloss", "peak PSS GiB",
                         "vs FuxiCTR", "AUC gap", "vs FuxiCTR, malloc kept", "target"], rows)


def dump_json(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1, default=str))
