"""Finding and reading run records (finished, failed, still running) and the config key that groups them."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbench.errors import UserInputError
from recbench.records import nulls_to_nan

# Resolved-config keys (dotted prefixes) that cannot change a run's result: left out of the config key.
# Where the data lives is not part of the key; what the data is, is (the dataset fingerprint).
NUMERIC_PARTS = ("metrics", "history", "progressive_curve", "train_epoch_samples_per_second")
NON_SEMANTIC = ("seed", "resume", "paths", "logger", "benchmark", "hydra", "tags", "predictions", "data.source", "data.raw_dir",
                "data.cache_dir", "data.replica_dir", "data.use_cache", "data.text_dir", "loader.eval_batch_size",
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                "trainer.default_root_dir")
# Keys a model config (conf/model/*.yaml) sets for its model: its network, the task it trains on (a2gen
# switches to task=action_generation), its optimiser (*_adatask), its text stage (lcu, llm_alignment;
# data.text mirrors it) and the data inputs it reads that leave the built arrays, hence the dataset
# fingerprint, unchanged (text embeddings, history content). Runs that differ only here (and in the seed)
# share a leaderboard table; any other difference (data.*, trainer.*, loader.*, streaming.*, the dataset
# fingerprint, ...) gives another table. A model's data setting that changes the arrays (llm_alignment_title's
# data.content) is data: its runs read other files, so they are not paired with the rest.
MODEL_OWNED = ("model", "task", "optimizer", "text", "data.text", "data.text_embeddings", "data.history_content")


@dataclass
class Run:
    """One run folder: a finished or failed record, or a run folder with no record (yet)."""

    path: Path  # the results.json (or the run folder when there is none)
    status: str  # finished | failed | interrupted | no record | unreadable
    record: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    mtime: float = 0.0

    @property
    def run_dir(self) -> Path:
        return self.path.parent if self.path.name == "results.json" else self.path

    def get(self, key: str, default: Any = None) -> Any:
        return self.record.get(key, default)


def find_runs(folders: Sequence[Path]) -> list[Run]:
    """Every results.json below the folders, plus run folders without one. Raises on a missing folder."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder.exists():
            raise UserInputError(f"{folder}: no such folder. Fix: pass the folder holding the runs "
                                 "(e.g. experiments/ or experiments/<sweep>)")
        files = [folder] if folder.is_file() else sorted(folder.rglob("results.json"))
        for path in files:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            runs.append(_read_record(path))
        if folder.is_dir():
            for hydra_dir in sorted(folder.rglob(".hydra")):
                run_dir = hydra_dir.parent
                if (run_dir / "results.json").exists() or run_dir.resolve() in seen:
                    continue
                seen.add(run_dir.resolve())
                incomplete = _incomplete_run(run_dir)
                if incomplete is not None:
                    runs.append(incomplete)
    return runs


def _read_record(path: Path) -> Run:
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a json object")
    except (OSError, ValueError) as error:
        return Run(path, "unreadable", error=f"unreadable results.json ({error})")
    for key in NUMERIC_PARTS:  # records write a missing (NaN) metric as null
        if key in record:
            record[key] = nulls_to_nan(record[key])
    status = record.get("status", "finished")
    metrics = record.get("metrics")
    if status == "finished" and not (isinstance(metrics, dict) and isinstance(metrics.get("test"), dict)):
        return Run(path, "unreadable", record, error="results.json has no test metrics", mtime=_mtime(path))
    return Run(path, status, record, error=str(record.get("error", "")), mtime=_mtime(path))


def _incomplete_run(run_dir: Path) -> Run | None:
    """A `python -m recbench` run folder (its .hydra/hydra.yaml names config `config`) without a record."""
    import yaml

    try:
        hydra_cfg = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        job, choices = hydra_cfg["job"], hydra_cfg["runtime"]["choices"]
        overrides = (yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or [])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    if job.get("config_name") != "config":  # e.g. a text-stage run (python -m recbench.text)
        return None
    seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), None)
    if seed is None:
        try:
            seed = (yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}).get("seed")
        except (OSError, yaml.YAMLError):
            seed = None
    record = {"model": choices.get("model"), "data": choices.get("data"), "task": choices.get("task"),
              "seed": _int_or(seed, seed), "overrides": overrides}
    return Run(run_dir, "no record", record, error="no results.json: still running, or it crashed before "
               "writing one (see its __main__.log)", mtime=_mtime(run_dir))


def run_tags(run: Run) -> list[str]:
    """The run's `tags` (conf/config.yaml): from its record's config; a failed, interrupted or unfinished
    run's record has no config, so then from a record-level `tags` or the run's .hydra/config.yaml."""
    config = run.get("config")
    if isinstance(config, dict):
        return _as_tags(config.get("tags"))
    if "tags" in run.record:
        return _as_tags(run.get("tags"))
    import yaml

    try:
        saved = yaml.safe_load((run.run_dir / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    return _as_tags(saved.get("tags") if isinstance(saved, dict) else None)


def _as_tags(value: Any) -> list[str]:
    """`tags: [a, b]`, and a single `tags=a` given as a string."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(tag) for tag in value]
    return [str(value)]


def with_tags(runs: Sequence[Run], tags: Sequence[str]) -> list[Run]:
    """The runs tagged with any of tags."""
    wanted = set(tags)
    return [run for run in runs if wanted & set(run_tags(run))]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _int_or(value: Any, default: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# config keys


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {"a.b.c": leaf}; an empty mapping stays a leaf ({})."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def semantic_config(record: dict[str, Any]) -> dict[str, Any]:
    """The flattened resolved config minus NON_SEMANTIC keys, with machine paths made relative
    (`/home/me/recbench/models/x` -> `${paths.models}/x`), plus the dataset fingerprint."""
    config = record.get("config") or {}
    paths = {name: str(value) for name, value in (config.get("paths") or {}).items() if value}
    prefixes = sorted(((value, f"${{paths.{name}}}") for name, value in paths.items()),
                      key=lambda item: -len(item[0]))
    run_dir = str(record.get("run_dir") or "")
    out: dict[str, Any] = {}
    seed = config.get("seed")
    for key, value in flatten_config(config).items():
        if _under(key, NON_SEMANTIC):
            continue
        if key.endswith("_seed") and seed is not None and value == seed:
            continue  # a model's own seed set to ${seed} (e.g. code_seed): varies with the seed only
        if isinstance(value, str):
            if run_dir and value.startswith(run_dir):
                value = "${run_dir}" + value[len(run_dir):]
            for path, name in prefixes:
                if value.startswith(path):
                    value = name + value[len(path):]
                    break
        out[key] = value
    out["dataset_fingerprint"] = record.get("dataset_fingerprint")
    return out


def config_key(record: dict[str, Any]) -> str:
    """12 hex digits identifying everything about a run but its seed and non-semantic settings."""
    canonical = json.dumps({"model": record.get("model"), **semantic_config(record)}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _under(key: str, prefixes: Sequence[str]) -> bool:
    """key is one of the dotted prefixes or lies below one (data.text covers data.text.model, not data.text_dir)."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def shared_config(record: dict[str, Any]) -> dict[str, Any]:
    """What the rows of one leaderboard table have in common: the semantic config (dataset fingerprint
    included) minus the model's own keys (MODEL_OWNED).

    An arm of an experiment (conf/arm/*.yaml) is a model with the data settings it is compared under (e.g.
    Moment&Cross on streams reported every 30 s or every hour): the keys its arm sets are its own too, and
    the table is fixed by the test split instead of the built arrays (`test_digest`: the labels, masks and
    groups the run was scored on), so arms share a table exactly when they were tested on the same samples.
    Records from before the digest existed keep the dataset fingerprint (arms then split)."""
    owned, config = MODEL_OWNED, semantic_config(record)
    arm = arm_keys(record) if record.get("test_digest") else ()
    if arm:
        owned = (*MODEL_OWNED, *arm)
        config = {**{k: v for k, v in config.items() if k != "dataset_fingerprint"}, "test_digest": record["test_digest"]}
    return {key: value for key, value in config.items() if not _under(key, owned)}


def arm_keys(record: dict[str, Any]) -> tuple[str, ...]:
    """For a run made with `arm=<name>`: every config key an arm sets (conf/arm/*.yaml; the union, so an arm
    that leaves a key at its default, e.g. the window stream's tick, still lines up with the others), or ()."""
    if not any(o.startswith("arm=") for o in record.get("overrides") or []):
        return ()
    return _all_arm_keys()


@functools.cache
def _all_arm_keys() -> tuple[str, ...]:
    import yaml

    keys: set[str] = set()
    for path in (Path(__file__).resolve().parents[2] / "conf" / "arm").glob("*.yaml"):
        settings = yaml.safe_load(path.read_text()) or {}
        keys.update(flatten_config({k: v for k, v in settings.items() if k != "defaults"}))
    return tuple(sorted(keys))


def table_key(record: dict[str, Any]) -> str:
    """12 hex digits identifying the shared settings: equal only for runs that may be compared row by row."""
    canonical = json.dumps(shared_config(record), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# The order in which a table's heading names its settings: the data first, then the training budget.
FIXED_ORDER = ("data.", "trainer.", "streaming.", "loader.", "early_stopping.")


def fixed_settings(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """For the tables of one dataset (table key -> shared config): per table the settings that set it apart
    from the others, {key: short value}, data first. The dataset fingerprint is named only where no setting
    differs (same settings, other data files: e.g. a changed replica generator)."""
    if len(configs) < 2:
        return {key: {} for key in configs}
    keys = sorted({k for config in configs.values() for k in config})
    varying = [k for k in keys if len({json.dumps(c.get(k, "<unset>"), default=str) for c in configs.values()}) > 1]

    def rank(key: str) -> tuple[int, str]:
        return next((i for i, p in enumerate(FIXED_ORDER) if key.startswith(p)), len(FIXED_ORDER)), key

    settings = sorted((k for k in varying if k != "dataset_fingerprint"), key=rank)
    out = {}
    for table, config in configs.items():
        out[table] = {k: _short_value(config.get(k, "<unset>")) for k in settings}
        if "dataset_fingerprint" in varying:
            same = [c for c in configs.values()
                    if all(c.get(k, "<unset>") == config.get(k, "<unset>") for k in settings)]
            if len(same) > 1:
                out[table]["data files"] = str(config.get("dataset_fingerprint"))[:6]
    return out


SUFFIX_ORDER = ("model.", "task.", "optimizer.", "loader.", "early_stopping.", "trainer.", "text.")


def distinguishing_suffixes(configs: dict[str, dict[str, Any]], tasks: dict[str, str]) -> dict[str, str]:
    """For rows of one model with different config keys: a short 'key=value, ...' naming what differs
    (model settings first, data last; at most 3 items, then the count of the rest). Suffixes that would
    still coincide get the config key appended."""
    if len(configs) < 2:
        return {key: "" for key in configs}
    keys = sorted({k for c in configs.values() for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k, "<unset>"), default=str) for c in configs.values()}) > 1]
    task_varies = len(set(tasks.values())) > 1
    if task_varies:  # name the task, not every head setting it brings
        varying = [k for k in varying if not k.startswith("task.")]
    data_keys = [k for k in varying if k.startswith("data.")]
    def rank(key: str) -> tuple[int, str]:
        return next((i for i, p in enumerate(SUFFIX_ORDER) if key.startswith(p)), len(SUFFIX_ORDER)), key

    other = sorted((k for k in varying if not k.startswith("data.") and k != "dataset_fingerprint"), key=rank)
    suffixes = {}
    for cfg_key, config in configs.items():
        parts = [f"task={tasks[cfg_key]}"] if task_varies else []
        parts += [f"{k.removeprefix('model.net.')}={_short_value(config.get(k, '<unset>'))}" for k in other]
        parts += [f"{k.removeprefix('data.')}={_short_value(config.get(k, '<unset>'))}" for k in data_keys]
        if not data_keys and "dataset_fingerprint" in varying:  # same data settings, other files
            parts.append(f"data {str(config.get('dataset_fingerprint'))[:6]}")
        text = ", ".join(parts[:3]) + (f", +{len(parts) - 3} more" if len(parts) > 3 else "")
        suffixes[cfg_key] = text or f"config {cfg_key[:6]}"
    counts: dict[str, int] = {}
    for text in suffixes.values():
        counts[text] = counts.get(text, 0) + 1
    return {k: (f"{text} [{k[:6]}]" if counts[text] > 1 and not text.startswith("config ") else text)
            for k, text in suffixes.items()}


def _short_value(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    text = text.rsplit(".", 1)[-1] if isinstance(value, str) and value.count(".") > 1 else text  # _target_ paths
    return text if len(text) <= 24 else text[:21] + "..."
