"""(grid) recbench vs FuxiCTR over history length x embedding rows, on the same generated rows.

    python -m recbench.bench --only grid [--points 20x50k,50x1m ...] [--repeats 3] [--rows 1000000]

Data, per point (history length H, embedding rows E): a generated CTR dataset in FuxiCTR's format
(`write_grid_data`: train / valid / test parquet folders + dataset_config.yaml), read by FuxiCTR as
any FuxiCTR dataset and by recbench through `data=fuxictr` (recbench/data/fuxictr.py) from the same
files. Fields: user, age, gender (user side), item, cat, seller, brand (item side), the user's
item and category histories (sequences sharing item's and cat's vocabularies, `max_len` H, each
row's length uniform in 1..H), a 0/1 label with planted signal (the target's category among the
user's two interest categories, or among its history's categories), and a `row` meta column. The
vocabularies, which both sides build from the training files, hold E rows in all: about 20% users
(at most a third of the training rows), cat / seller / brand E/1000, E/50, E/100, the rest items;
every id is placed in the training rows at least once, so the tables have exactly those rows (plus
padding and OOV per field). Items follow a Zipf(0.9) popularity, users Zipf(0.7).

Runs, per point and model: each side trains `epochs` epochs (default 1) over the `rows` training
rows (default 1,000,000), validates on `eval_rows` rows (default 50,000) and tests on as many; `repeats`
runs per side (default 3), interleaved: round r runs every side once, in the same order (A B C A B
C ...). Sides: recbench as configured by default (optimizer by table size, conf/optimizer/adam.yaml
`sparse_min_rows`); FuxiCTR with 1 loader worker (recbench's export default) and with 3 (its
model_zoo default); optionally recbench with dense Adam everywhere (`--sides ... recbench_dense`).
Both sides run with the same glibc malloc settings (`--malloc kept`: the thresholds recbench's
`keep_freed_memory` sets, given to both processes through GLIBC_TUNABLES; `--malloc default`:
glibc's defaults on both, recbench with keep_freed_memory=false). Before the timed runs each side
builds its processed data once (recbench: its dataset cache; FuxiCTR: `--preprocess-only`), so a
timed run reads caches; those build times are reported too.

Figures per run: the epoch rate (training samples / s of each epoch's loop, validation excluded;
with several epochs the median of epochs 2..), the steady-state step rate (median over the steps
after the first `warmup_steps` of each epoch, the epoch's last (partial) batch left out, of batch
samples / the seconds from the previous step's end to this step's end, so batch loading is
included), peak memory as PSS summed over the process tree (recbench/bench/common.py; Ray's
processes share its object store, which RSS would count once per process), test AUC. Per side:
min / median / max over the repeats; ratios recbench / FuxiCTR of the medians, with the range
[recbench min / FuxiCTR max, recbench max / FuxiCTR min].

Results go to a json of their own (default experiments/bench/grid.json), rewritten atomically after
every run: an interrupted grid resumes where it stopped (points whose settings match are kept: a
complete point is skipped, a partial one runs only its missing runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from recbench.bench import ctr
from recbench.bench.common import JobFailed, fmt, run_measured, table, worker_command
from recbench.records import atomic_folder, write_json_atomic, write_text_atomic

GRID_HISTORY = (20, 50, 100)
GRID_ROWS = (50_000, 1_000_000, 10_000_000)
DATASET_ID = "recbench_grid"
SEQUENCES = {"item": "item_history", "cat": "cat_history"}  # field -> its history column
USER_FIELDS, ITEM_FIELDS = ("user", "age", "gender"), ("item", "cat", "seller", "brand")
EXPIDS = {"din": "DIN_recbench", "deepfm": "DeepFM_recbench"}
SIDES: dict[str, dict[str, Any]] = {
    "recbench": {"framework": "recbench", "overrides": (), "label": "recbench (default optimizer)"},
    "recbench_dense": {"framework": "recbench", "overrides": ("model.net.sparse_embeddings=false",),
                       "label": "recbench (dense Adam)"},
    "fuxictr_w1": {"framework": "fuxictr", "num_workers": 1, "label": "FuxiCTR, 1 loader worker"},
    "fuxictr_w3": {"framework": "fuxictr", "num_workers": 3, "label": "FuxiCTR, 3 workers (model_zoo)"},
}
DEFAULT_SIDES = ("recbench", "fuxictr_w1", "fuxictr_w3")
MALLOC = ("kept", "default")
PART_ROWS = 250_000  # rows per parquet part file


@dataclasses.dataclass(frozen=True)
class GridSettings:
    """What every run of the grid shares (the model sizes are the CTR section's, recbench/bench/ctr.py)."""

    train_rows: int = 1_000_000
    eval_rows: int = 50_000          # validation rows, and as many test rows
    epochs: int = 1                  # per run: a fixed amount of work (train_rows x epochs samples)
    repeats: int = 3                 # runs per side and point, interleaved
    warmup_steps: int = 10           # steps of each epoch left out of the steady-state step rate
    models: tuple[str, ...] = ("din",)
    sides: tuple[str, ...] = DEFAULT_SIDES
    malloc: str = "kept"
    embedding_dim: int = ctr.CTRSettings.embedding_dim
    mlp_hidden: tuple[int, ...] = ctr.CTRSettings.mlp_hidden
    attention_hidden: tuple[int, ...] = ctr.CTRSettings.attention_hidden
    batch_size: int = ctr.CTRSettings.batch_size
    learning_rate: float = ctr.CTRSettings.learning_rate
    seed: int = 1                    # training seed of round 1 (both sides); round r uses seed + r
    data_seed: int = 0               # generator seed

    @classmethod
    def quick(cls) -> "GridSettings":
        return cls(train_rows=20_000, eval_rows=2_000, repeats=1, batch_size=1024, warmup_steps=2,
                   sides=("recbench",))


@dataclasses.dataclass(frozen=True)
class Point:
    history: int
    rows: int  # embedding rows asked for

    @property
    def name(self) -> str:
        return f"{self.history}x{short(self.rows)}"


def short(n: int) -> str:
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def parse_count(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = float(text[:-1] if scale > 1 else text)
    if number <= 0 or number * scale != int(number * scale):
        raise ValueError(f"not a positive count: {text!r}")
    return int(number * scale)


def parse_points(specs: list[str] | None) -> list[Point]:
    """['20x50k,50x1m', '100x10m'] -> points; None: the full grid (GRID_HISTORY x GRID_ROWS)."""
    if not specs:
        return [Point(h, r) for r in GRID_ROWS for h in GRID_HISTORY]
    points = []
    for spec in ",".join(specs).split(","):
        if not spec.strip():
            continue
        history, _, rows = spec.strip().partition("x")
        try:
            points.append(Point(int(history), parse_count(rows)))
        except ValueError:
            raise ValueError(f"--points: '{spec}' is not <history length>x<embedding rows>, e.g. 20x50k or 100x10m") from None
    return points


# ---------------------------------------------------------------------- the data
def plan_vocabulary(rows: int, train_rows: int) -> dict[str, int]:
    """Ids per field for about `rows` embedding rows in all."""
    sizes = {"user": max(100, min(rows // 5, train_rows // 3)), "age": 8, "gender": 3,
             "cat": max(8, rows // 1000), "seller": max(8, rows // 50), "brand": max(8, rows // 100)}
    sizes["item"] = rows - sum(sizes.values())
    if sizes["item"] < 10 * sizes["cat"]:
        raise ValueError(f"{rows} embedding rows is too few for the grid's fields (users {sizes['user']}, ...)")
    return sizes


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    cdf = np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent)
    return cdf / cdf[-1]


def _draw(rng: np.random.Generator, cdf: np.ndarray, size) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1).astype(np.int64)


def _hash(ids: np.ndarray, salt: int, modulo: int) -> np.ndarray:
    return ((ids.astype(np.uint64) * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(modulo)).astype(np.int64)


def generate(history: int, rows: int, train_rows: int, eval_rows: int, seed: int) -> dict[str, Any]:
    """The grid's rows as arrays (train rows first, then validation, then test)."""
    rng = np.random.default_rng(seed)
    sizes = plan_vocabulary(rows, train_rows)
    n = train_rows + 2 * eval_rows
    n_users, n_items, n_cats = sizes["user"], sizes["item"], sizes["cat"]
    # users: Zipf activity; the first n_users training rows hold every user once (then shuffled in)
    user = _draw(rng, _zipf_cdf(n_users, 0.7), n)
    user[:n_users] = rng.permutation(n_users)
    user[:train_rows] = user[:train_rows][rng.permutation(train_rows)]
    age, gender = rng.integers(0, sizes["age"], n_users), rng.integers(0, sizes["gender"], n_users)
    interests = _draw(rng, _zipf_cdf(n_cats, 0.8), (n_users, 2))
    user_bias = rng.normal(0.0, 0.3, n_users)
    # items: contiguous blocks per category, Zipf popularity over all items
    cat_start = (np.arange(n_cats + 1) * n_items) // n_cats
    item_cdf = _zipf_cdf(n_items, 0.9)
    popular_rank = rng.permutation(n_items)  # the popular items spread over the categories

    def items_for(users: np.ndarray, interest_share: float) -> np.ndarray:
        """One item per entry: from one of the user's interest categories, else by popularity."""
        from_interest = rng.random(users.shape) < interest_share
        cat = interests[users, rng.integers(0, 2, users.shape)]
        size = cat_start[cat + 1] - cat_start[cat]
        within = cat_start[cat] + np.minimum((rng.random(users.shape) ** 2 * size).astype(np.int64), size - 1)
        return np.where(from_interest, within, popular_rank[_draw(rng, item_cdf, users.shape)])

    lengths = rng.integers(1, history + 1, n)
    target = items_for(user, 0.5)
    hist = np.full((n, history), -1, dtype=np.int64)
    for start in range(0, n, 100_000):  # chunks bound the temporaries
        stop = min(n, start + 100_000)
        block = items_for(np.repeat(user[start:stop, None], history, 1), 0.6)
        valid = np.arange(history)[None, :] < lengths[start:stop, None]
        hist[start:stop] = np.where(valid, block, -1)
    # every item at least once in the training rows: one random training slot (a target or a history
    # entry) per item, when there are enough slots (else as many distinct items as slots)
    slots_per_row = 1 + lengths[:train_rows]
    offsets = np.concatenate([[0], np.cumsum(slots_per_row)])
    n_slots = int(offsets[-1])
    chosen = rng.permutation(n_slots)[:min(n_items, n_slots)]
    placed = rng.permutation(n_items)[:len(chosen)]
    row = np.searchsorted(offsets, chosen, side="right") - 1
    position = chosen - offsets[row]
    is_target = position == 0
    target[row[is_target]] = placed[is_target]
    hist[row[~is_target], position[~is_target] - 1] = placed[~is_target]
    del chosen, placed, row, position, is_target

    cat_of = np.searchsorted(cat_start, np.arange(n_items), side="right") - 1
    target_cat = cat_of[target]
    in_interest = (interests[user] == target_cat[:, None]).any(1)
    in_history = np.zeros(n, dtype=bool)
    for start in range(0, n, 100_000):
        block = hist[start:start + 100_000]
        in_history[start:start + 100_000] = ((cat_of[np.maximum(block, 0)] == target_cat[start:start + 100_000, None])
                                             & (block >= 0)).any(1)
    quality = _hash(target, 7, 1000) / 1000.0 - 0.5
    logit = -2.4 + 1.2 * in_interest + 0.9 * in_history + user_bias[user] + 0.8 * quality
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    return {"user": user, "age": age[user], "gender": gender[user], "item": target, "cat": target_cat,
            "seller": _hash(target, 11, sizes["seller"]), "brand": _hash(target, 13, sizes["brand"]),
            "item_history": hist, "cat_of": cat_of, "lengths": lengths, "label": label, "sizes": sizes,
            "slots": n_slots}


def _frame(data: dict[str, Any], start: int, stop: int):
    """Rows [start, stop) as a polars frame: string tokens, '^'-joined histories (oldest first)."""
    import polars as pl

    columns = {f: data[f][start:stop].astype(str) for f in (*USER_FIELDS, *ITEM_FIELDS)}
    hist = data["item_history"][start:stop]
    lengths = data["lengths"][start:stop]
    frame = pl.DataFrame({"item_h": hist, "cat_h": np.where(hist >= 0, data["cat_of"][np.maximum(hist, 0)], -1),
                          "length": lengths})
    joined = frame.select([pl.col(c).arr.to_list().list.head(pl.col("length")).list.eval(pl.element().cast(pl.String))
                           .list.join("^").alias(name) for c, name in (("item_h", "item_history"), ("cat_h", "cat_history"))])
    return pl.DataFrame(columns).with_columns(joined, label=pl.Series(data["label"][start:stop]),
                                              row=pl.Series(np.arange(start, stop, dtype=np.int64)))


def dataset_entry(history: int, folder: Path) -> dict[str, Any]:
    """The FuxiCTR dataset_config.yaml entry of a grid dataset in `folder`."""
    sequences = [{"name": column, "active": True, "dtype": "str", "type": "sequence", "splitter": "^",
                  "max_len": history, "padding": "pre", "share_embedding": field}
                 for field, column in SEQUENCES.items()]
    return {"data_root": str(folder / "fuxictr") + "/", "data_format": "parquet",
            "train_data": str(folder / "train"), "valid_data": str(folder / "valid"), "test_data": str(folder / "test"),
            "min_categr_count": 1,
            "feature_cols": [{"name": list(USER_FIELDS), "active": True, "dtype": "str", "type": "categorical",
                              "source": "user"},
                             {"name": list(ITEM_FIELDS), "active": True, "dtype": "str", "type": "categorical",
                              "source": "item"},
                             *sequences,
                             {"name": "row", "active": True, "dtype": "int", "type": "meta", "remap": False}],
            "label_col": {"name": "label", "dtype": "float"}}


def write_grid_data(folder: Path, point: Point, settings: GridSettings) -> dict[str, Any]:
    """Generate a point's dataset into `folder` once (atomically); returns its info (info.json)."""
    import yaml

    info_file = folder / "info.json"
    if info_file.is_file():
        return json.loads(info_file.read_text())
    started = time.perf_counter()
    data = generate(point.history, point.rows, settings.train_rows, settings.eval_rows, settings.data_seed)
    bounds = {"train": (0, settings.train_rows), "valid": (settings.train_rows, settings.train_rows + settings.eval_rows),
              "test": (settings.train_rows + settings.eval_rows, settings.train_rows + 2 * settings.eval_rows)}
    with atomic_folder(folder) as tmp:
        for split, (begin, end) in bounds.items():
            (tmp / split).mkdir()
            for k, start in enumerate(range(begin, end, PART_ROWS)):
                _frame(data, start, min(end, start + PART_ROWS)).write_parquet(tmp / split / f"part-{k:04d}.parquet")
        # the entry names the final folder: the files are read from there, never from the temp one
        (tmp / "dataset_config.yaml").write_text(yaml.safe_dump({DATASET_ID: dataset_entry(point.history, folder)},
                                                                sort_keys=False))
        info = {"point": dataclasses.asdict(point), "ids_per_field": data["sizes"],
                "planned_embedding_rows": int(sum(data["sizes"].values())), "training_item_slots": data["slots"],
                "rows": {s: e - b for s, (b, e) in bounds.items()},
                "positive_rate": {s: float(data["label"][b:e].mean()) for s, (b, e) in bounds.items()},
                "mean_history_length": float(data["lengths"].mean()), "seconds": time.perf_counter() - started}
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
    return info


# ---------------------------------------------------------------------- the runs
def recbench_overrides(settings: GridSettings, model: str, folder: Path, run_dir: Path, seed: int | None = None) -> list[str]:
    net = ctr.net_overrides(settings, model, SEQUENCES)
    return [f"model={model}", "data=fuxictr", "data.source=raw", f"data.config={folder / 'dataset_config.yaml'}",
            f"data.dataset_id={DATASET_ID}", f"data.cache_dir={folder / 'recbench_cache'}", "task=ctr",
            f"seed={settings.seed if seed is None else seed}", *net, f"loader.batch_size={settings.batch_size}",
            f"loader.eval_batch_size={settings.batch_size}", f"optimizer.dense.lr={settings.learning_rate}",
            f"optimizer.sparse.lr={settings.learning_rate}", "optimizer.gradient_clip=10.0",
            f"trainer.max_epochs={settings.epochs}", f"early_stopping.patience={settings.epochs + 1}",
            "trainer.enable_progress_bar=false", "checkpoint.every_n_steps=null",
            f"keep_freed_memory={'true' if settings.malloc == 'kept' else 'false'}", f"paths.experiments={run_dir.parent}"]


def malloc_env(settings: GridSettings) -> dict[str, str] | None:
    """Both sides' processes get the same glibc settings (`kept`: recbench's keep_freed_memory values)."""
    return dict(ctr.FUXICTR_MALLOC_ENV) if settings.malloc == "kept" else None


def steady_step_rate(step_seconds: list[list[float]], step_samples: list[list[int]], warmup: int) -> float | None:
    """Median of samples / seconds over each epoch's steps after `warmup`, the last step left out."""
    rates = []
    for seconds, samples in zip(step_seconds, step_samples):
        keep = list(zip(seconds, samples))[:-1] if len(seconds) > 1 else list(zip(seconds, samples))
        keep = keep[warmup:] or keep[len(keep) // 2:]
        rates += [n / s for s, n in keep if s > 0]
    return float(statistics.median(rates)) if rates else None


def epoch_rate(rates: list[float]) -> float:
    """The only epoch's rate, or the median of epochs 2.. (epoch 1 holds one-off start-up costs)."""
    return float(statistics.median(rates[1:] if len(rates) > 1 else rates))


def _summary(result: dict[str, Any], settings: GridSettings) -> dict[str, Any]:
    return {"epoch_samples_per_second": result["epoch_samples_per_second"],
            "samples_per_second": epoch_rate(result["epoch_samples_per_second"]),
            "step_samples_per_second": steady_step_rate(result.get("step_seconds", []), result.get("step_samples", []),
                                                        settings.warmup_steps),
            "steps": sum(len(s) for s in result.get("step_seconds", [])),
            "peak_tree_pss_gib": result.get("peak_tree_pss_gib"), "peak_tree_rss_gib": result.get("peak_tree_rss_gib"),
            **({"pss_note": result["pss_note"]} if "pss_note" in result else {}),
            "peak_rss_self_gib": result.get("peak_rss_self_gib"), "wall_seconds": result.get("wall_seconds"),
            "test": result.get("test"), "parameters": result.get("parameters"),
            **{k: result[k] for k in ("row_updates", "num_workers", "glibc_tunables", "keep_freed_memory",
                                      "threads", "embedding_rows") if k in result}}


def run_recbench(settings: GridSettings, side: str, model: str, folder: Path, run_dir: Path, threads: int,
                 cpus: int | None, seed: int) -> dict[str, Any]:
    overrides = [*recbench_overrides(settings, model, folder, run_dir, seed), *SIDES[side]["overrides"]]
    job = {"kind": "train", "overrides": overrides, "run_dir": str(run_dir), "threads": threads, "cpus": cpus,
           "result": str(run_dir / "bench_result.json")}
    result = run_measured(worker_command(job, run_dir / "job.json"), Path(job["result"]), run_dir / "log.txt",
                          env=malloc_env(settings))
    test = result["metrics"]["test"]
    result["test"] = {m: test.get(f"test/{m}/label") for m in ("auc", "gauc", "logloss")}
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # ~4 GB a run at 10M rows (weights + Adam moments)
    return _summary(result, settings)


def fuxictr_command(python: Path, folder: Path, model: str, out: Path, threads: int, cpus: int | None,
                    num_workers: int | None = None, preprocess_only: bool = False, seed: int | None = None) -> list[str]:
    command = [str(python), str(ctr.RUNNER), "--config-dir", str(folder), "--expid", EXPIDS[model],
               "--threads", str(threads), "--out", str(out)]
    if num_workers is not None:
        command += ["--num-workers", str(num_workers)]
    if seed is not None:
        command += ["--seed", str(seed)]
    if model == "deepfm":  # the (a) section's fair reference: FuxiCTR's DeepFM with its LR init fixed
        command.append("--fix-deepfm-init")
    if preprocess_only:
        command.append("--preprocess-only")
    return ["taskset", "-c", f"0-{cpus - 1}", *command] if cpus else command


def run_fuxictr(settings: GridSettings, side: str, model: str, folder: Path, run_dir: Path, threads: int,
                cpus: int | None, python: Path, truth: tuple[np.ndarray, np.ndarray, int], seed: int) -> dict[str, Any]:
    out = run_dir / "result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = fuxictr_command(python, folder, model, out, threads, cpus, SIDES[side]["num_workers"], seed=seed)
    result = run_measured(command, out, run_dir / "log.txt", env=malloc_env(settings))
    labels, groups, first = truth
    with np.load(result["predictions"]) as saved:
        at = saved["row"] - first
        if len(at) != len(labels) or len(np.unique(at)) != len(labels) or at.min() < 0 or at.max() >= len(labels):
            raise JobFailed(f"FuxiCTR predicted {len(at)} test rows, expected rows {first}..{first + len(labels) - 1}")
        pred = np.empty(len(labels))
        pred[at] = saved["pred"]
    result["test"] = ctr.score(pred, labels, groups)
    shutil.rmtree(run_dir.parent / "fuxictr_checkpoints", ignore_errors=True)  # its best weights: not needed here
    return _summary(result, settings)


def truth_of_test_rows(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels and user groups of the test rows in row order, and the first test row id (for
    scoring FuxiCTR's predictions, which carry their row ids)."""
    import polars as pl

    frame = pl.read_parquet(folder / "test" / "*.parquet").sort("row")
    return frame["label"].to_numpy(), frame["user"].cast(pl.Int64).to_numpy(), int(frame["row"][0])


def prepare_point(settings: GridSettings, point: Point, model: str, folder: Path, work: Path, threads: int,
                  cpus: int | None, python: Path | None, log) -> dict[str, Any]:
    """Build each side's processed data before the timed runs (recbench's dataset cache, FuxiCTR's
    processed parquet + feature map; a reload where built before) and write FuxiCTR's model config
    for these settings; returns the build figures."""
    import yaml

    write_text_atomic(folder / "model_config.yaml", yaml.safe_dump(
        ctr.fuxictr_models(settings, DATASET_ID, work / "fuxictr_checkpoints", list(SEQUENCES), list(SEQUENCES.values())),
        sort_keys=False))
    built: dict[str, Any] = {}
    run_dir = work / "prepare" / f"recbench_{model}"
    job = {"kind": "prepare", "overrides": recbench_overrides(settings, model, folder, run_dir),
           "result": str(run_dir / "result.json"), "cpus": cpus}
    log(f"bench grid {point.name}: recbench builds its dataset cache")
    result = run_measured(worker_command(job, run_dir / "job.json"), Path(job["result"]), run_dir / "log.txt")
    built["recbench"] = {"seconds": result["seconds"], "phases": result.get("phases", {}),
                         "peak_tree_pss_gib": result["peak_tree_pss_gib"]}
    if python is not None:
        out = work / "prepare" / "fuxictr" / "result.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        log(f"bench grid {point.name}: FuxiCTR builds its processed data")
        result = run_measured(fuxictr_command(python, folder, model, out, threads, cpus, preprocess_only=True),
                              out, out.parent / "log.txt")
        built["fuxictr"] = {"seconds": result["preprocess_seconds"], "peak_tree_pss_gib": result["peak_tree_pss_gib"]}
    return built


def settings_key(settings: GridSettings, point: Point, model: str, threads: int, cpus: int | None) -> str:
    """What a point's figures depend on (a resumed grid reuses a point only when this matches)."""
    keep = dataclasses.asdict(settings)
    keep.pop("repeats"), keep.pop("sides"), keep.pop("models")
    payload = json.dumps([keep, dataclasses.asdict(point), model, threads, cpus, ctr.FUXICTR_VERSION], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def spread(values: list[float | None]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": float(min(values)), "median": float(statistics.median(values)), "max": float(max(values)),
            "mean": float(statistics.fmean(values))}


def optimizer_label(row_updates: list[list[dict[str, Any]] | None]) -> str | None:
    """How a recbench side's runs updated their id tables: 'dense Adam', 'SparseAdam rows', or both
    kinds named when its runs (or tables) differ; None for FuxiCTR (always dense Adam)."""
    kinds = {"SparseAdam rows" if t["sparse"] else "dense Adam" for updates in row_updates if updates is not None
             for t in updates}
    if not kinds and any(updates is not None for updates in row_updates):
        kinds = {"dense Adam"}  # no table marked sparse: all dense
    return " + ".join(sorted(kinds)) or None


def summarize(entry: dict[str, Any], sides: tuple[str, ...]) -> dict[str, Any]:
    """Per side: min / median / max of each figure over its runs; ratios of recbench to each FuxiCTR side."""
    out: dict[str, Any] = {}
    for side in sides:
        runs = [r for r in entry["runs"].get(side, {}).values()]
        if not runs:
            continue
        out[side] = {"runs": len(runs),
                     "samples_per_second": spread([r["samples_per_second"] for r in runs]),
                     "step_samples_per_second": spread([r["step_samples_per_second"] for r in runs]),
                     "peak_tree_pss_gib": spread([r["peak_tree_pss_gib"] for r in runs]),
                     "test_auc": spread([(r.get("test") or {}).get("auc") for r in runs]),
                     "embedding_rows": next((r["embedding_rows"] for r in runs if r.get("embedding_rows")), None),
                     "optimizer": optimizer_label([r.get("row_updates") for r in runs])}
    rec = out.get("recbench")
    for side, figures in out.items():
        if SIDES[side]["framework"] != "fuxictr" or rec is None:
            continue
        for key in ("samples_per_second", "step_samples_per_second"):
            a, b = rec[key], figures[key]
            if a and b:
                figures[f"recbench_ratio_{key}"] = {"median": a["median"] / b["median"], "min": a["min"] / b["max"],
                                                    "max": a["max"] / b["min"]}
        if rec["test_auc"] and figures["test_auc"]:  # the gap of the means over the rounds' seeds
            figures["recbench_auc_gap"] = rec["test_auc"]["mean"] - figures["test_auc"]["mean"]
    return out


# The targets on this machine: >= 2x FuxiCTR's median samples/s, test AUC within 0.002 (mean over
# the rounds' seeds), peak PSS below FuxiCTR's.
TARGET_RATIO, TARGET_AUC_GAP = 2.0, 0.002


def verdict(summary: dict[str, Any]) -> dict[str, Any] | None:
    """recbench against every FuxiCTR side at one point: the worst ratio of medians, the AUC gap of means
    farthest from 0 (recbench - FuxiCTR), the peak PSS of each (recbench's max against FuxiCTR's min),
    and whether each target holds."""
    rec = summary.get("recbench")
    others = [f for side, f in summary.items() if SIDES.get(side, {}).get("framework") == "fuxictr"]
    if rec is None or not others:
        return None
    ratios = [f["recbench_ratio_samples_per_second"]["median"] for f in others if f.get("recbench_ratio_samples_per_second")]
    gaps = [f["recbench_auc_gap"] for f in others if "recbench_auc_gap" in f]
    pss = [f["peak_tree_pss_gib"]["min"] for f in others if f.get("peak_tree_pss_gib")]
    rec_pss = (rec.get("peak_tree_pss_gib") or {}).get("max")
    out = {"rounds": min([rec["runs"], *(f["runs"] for f in others)]),
           "ratio": min(ratios) if ratios else None,
           "auc_gap": max(gaps, key=abs) if gaps else None,
           "pss_recbench": rec_pss, "pss_fuxictr": min(pss) if pss else None}
    out["speed_met"] = out["ratio"] is not None and out["ratio"] >= TARGET_RATIO
    out["auc_met"] = out["auc_gap"] is not None and abs(out["auc_gap"]) <= TARGET_AUC_GAP  # within, either way
    out["memory_met"] = rec_pss is not None and out["pss_fuxictr"] is not None and rec_pss < out["pss_fuxictr"]
    return out


def check_settings(settings: GridSettings) -> None:
    """One line for a side, model or malloc setting the grid does not know, or a count below 1."""
    for what, given, known in (("--sides", settings.sides, SIDES), ("--grid-models", settings.models, EXPIDS),
                               ("--malloc", (settings.malloc,), MALLOC)):
        unknown = [g for g in given if g not in known]
        if unknown or not given:
            raise ValueError(f"{what}: {', '.join(unknown) or 'none given'} (known: {', '.join(known)})")
    for what, value in (("--repeats", settings.repeats), ("--epochs", settings.epochs), ("--rows", settings.train_rows),
                        ("--eval-rows", settings.eval_rows)):
        if value < 1:
            raise ValueError(f"{what} must be at least 1, got {value}")


def run(settings: GridSettings, points: list[Point], work: Path, out_file: Path, threads: int, with_fuxictr: bool,
        log: Callable[[str], None], cpus: int | None = None, environment: dict[str, Any] | None = None) -> dict[str, Any]:
    check_settings(settings)
    sides = tuple(s for s in settings.sides if with_fuxictr or SIDES[s]["framework"] == "recbench")
    python = ctr.ensure_fuxictr_venv(log) if any(SIDES[s]["framework"] == "fuxictr" for s in sides) else None
    figures: dict[str, Any] = json.loads(out_file.read_text()) if out_file.is_file() else {}
    figures.setdefault("points", {})
    figures.update(settings=dataclasses.asdict(settings), sides=list(sides), threads=threads, cpus=cpus,
                   fuxictr_version=ctr.FUXICTR_VERSION if python else None, environment=environment or {})
    save = lambda: write_json_atomic(out_file, figures)  # noqa: E731  (after every run: a cut-off grid resumes)
    for model in settings.models:
        for point in points:
            name = f"{model}/{point.name}"
            key = settings_key(settings, point, model, threads, cpus)
            entry = figures["points"].get(name)
            if entry is not None and entry.get("settings_key") != key:
                log(f"bench grid {name}: settings changed since the stored figures; measuring again")
                entry = None
            if entry is None:
                entry = {"point": dataclasses.asdict(point), "model": model, "settings_key": key, "runs": {}}
            wanted = [(r, side) for r in range(settings.repeats) for side in sides]  # interleaved: round by round
            missing = [(r, side) for r, side in wanted if str(r) not in entry["runs"].get(side, {})]
            if not missing:
                log(f"bench grid {name}: done before, skipped")
                continue
            folder = work / "data" / f"h{point.history}_e{short(point.rows)}_n{short(settings.train_rows)}_s{settings.data_seed}"
            log(f"bench grid {name}: data ({folder})")
            entry["data"] = write_grid_data(folder, point, settings)
            point_work = work / "runs" / f"{model}_{point.name}"
            built = prepare_point(settings, point, model, folder, point_work, threads, cpus, python, log)
            for side, figures_built in built.items():  # the first build's figures (a resume only reloads)
                entry.setdefault("built", {}).setdefault(side, figures_built)
            truth = truth_of_test_rows(folder) if python is not None else None
            for r, side in missing:
                seed = settings.seed + r  # round r: one seed for every side, so 3 rounds average 3 seeds
                log(f"bench grid {name}: {side}, run {r + 1}/{settings.repeats} (seed {seed})")
                run_dir = point_work / f"{side}_r{r}"
                if SIDES[side]["framework"] == "recbench":
                    result = run_recbench(settings, side, model, folder, run_dir, threads, cpus, seed)
                else:
                    result = run_fuxictr(settings, side, model, folder, run_dir, threads, cpus, python, truth, seed)
                result["seed"] = seed
                entry["runs"].setdefault(side, {})[str(r)] = result
                entry["summary"] = summarize(entry, sides)
                figures["points"][name] = entry
                save()
    figures["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    return figures


def report(figures: dict[str, Any]) -> str:
    """The grid's table (every side at every point) and the targets table (one row a point)."""
    s = figures["settings"]
    rows, targets = [], []
    for name, entry in figures["points"].items():
        summary = summarize(entry, tuple(side for side in SIDES if side in entry["runs"]))  # from the runs as stored
        for side, f in summary.items():
            rate, step, pss, auc = (f.get(k) for k in ("samples_per_second", "step_samples_per_second",
                                                       "peak_tree_pss_gib", "test_auc"))
            ratio = f.get("recbench_ratio_samples_per_second")
            step_ratio = f.get("recbench_ratio_step_samples_per_second")
            label = SIDES.get(side, {}).get("label", side) + (f" [{f['optimizer']}]" if f.get("optimizer") else "")
            rows.append([name, label, f"{f['runs']}", fmt(f.get("embedding_rows")),
                         "-" if not rate else f"{fmt(rate['min'])} / {fmt(rate['median'])} / {fmt(rate['max'])}",
                         "-" if not step else fmt(step["median"]),
                         "-" if not pss else f"{pss['median']:.2f} ({pss['max']:.2f})",
                         "-" if not auc else fmt(auc["mean"], 4),
                         "-" if not ratio else f"{ratio['median']:.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}]",
                         "-" if not step_ratio else f"{step_ratio['median']:.2f}x",
                         "-" if "recbench_auc_gap" not in f else f"{f['recbench_auc_gap']:+.4f}"])
        v = verdict(summary)
        if v is not None:
            mark = lambda met: "met" if met else "MISSED"  # noqa: E731
            targets.append([name, str(v["rounds"]), "-" if v["ratio"] is None else f"{v['ratio']:.2f}x {mark(v['speed_met'])}",
                            "-" if v["auc_gap"] is None else f"{v['auc_gap']:+.4f} {mark(v['auc_met'])}",
                            f"{fmt(v['pss_recbench'], 2)} vs {fmt(v['pss_fuxictr'], 2)} {mark(v['memory_met'])}"])
    title = (f"(grid) recbench vs FuxiCTR {figures.get('fuxictr_version') or '(not run)'}: "
             f"{s['train_rows']:,} training rows, {s['epochs']} epoch(s) a run, batch {s['batch_size']}, emb "
             f"{s['embedding_dim']}, MLP {s['mlp_hidden']}, up to {s['repeats']} interleaved rounds per side (round r: seed "
             f"{s['seed']} + r), malloc '{s['malloc']}' on both sides, {figures['threads']} threads; samples/s min / median / "
             f"max over the rounds; step/s: steady-state (after {s['warmup_steps']} steps); PSS: median (max); test AUC: "
             "mean; ratio: recbench / this side, medians [min/max - max/min]; AUC gap: recbench - this side, means")
    text = table(title, ["model/HxE", "side", "runs", "emb rows", "epoch samples/s", "step samples/s",
                         "peak PSS GiB", "test AUC", "recbench / this", "step ratio", "AUC gap"], rows)
    if targets:
        text += "\n\n" + table(
            f"(grid) targets: >= {TARGET_RATIO:g}x the median samples/s of every FuxiCTR side, test AUC within "
            f"{TARGET_AUC_GAP} (gap of means farthest from 0), peak PSS below FuxiCTR's (recbench's max vs FuxiCTR's min)",
            ["model/HxE", "rounds", "worst ratio", "AUC gap", "peak PSS GiB"], targets)
    return text
