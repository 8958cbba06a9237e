"""`python -m recbench.report [FOLDER ...]`: the leaderboard of every results.json below the folders.

    python -m recbench.report experiments/                     # leaderboard.md + leaderboard.html + plots
    python -m recbench.report experiments/a2gen_tmall --format csv,json --out /tmp/board

What it does, in order:
  1. finds every `results.json` below the folders, and every run folder (a `.hydra/` folder of a
     `python -m recbench` run) without one: still running, or crashed before writing its record;
  2. puts finished records into tables keyed by (data, data source, monitored metric): synthetic and
     real data never share a table. The "task" of a table is the metric the runs were selected on
     (`task.monitor`, e.g. valid/auc/mean), not the name of the task config: A2Gen trains with
     `task=action_generation`, MMoE with `task=actions`, and both are scored on the same test metrics;
  3. within a table one row per (model, config key); the config key hashes the resolved config minus
     the seed and the settings that cannot change a result (paths, logger, progress bar, ...; see
     NON_SEMANTIC) plus the dataset fingerprint, so records that differ in anything else are never
     averaged together: they become separate rows with a short suffix naming what differs. Two
     records of the same row and seed: the newer counts, the older is listed as superseded;
  4. per row and metric: mean +- 95% confidence interval over seeds (Student t), number of seeds; the
     best mean per column is marked; each row is compared with the reference row (the best baseline
     by the validation value of the monitored metric) by a paired t-test on the seeds both have;
  5. writes leaderboard.md, a self-contained leaderboard.html (plots inlined) and the plots as PNG
     files (leaderboard_files/), or `--format csv|json` for machines. Every write is atomic.

Which models are baselines: the `benchmark:` block of an experiment config (conf/experiment/*.yaml,
recorded in each run's config) names `proposed`, `baselines` and `ablations`; `--baselines a,b`
overrides it. With no roles at all, every row is a candidate and the reference is the best row.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import hashlib
import html
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recbench.errors import UserInputError

OUTPUT_STEM = "leaderboard"
PLOTS_DIR = f"{OUTPUT_STEM}_files"
FORMATS = ("md", "html", "csv", "json")
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05

# Resolved-config keys (dotted prefixes) that cannot change a run's result: left out of the config key.
# Where the data lives is not part of the key; what the data is, is (the dataset fingerprint).
NON_SEMANTIC = ("seed", "resume", "paths", "logger", "benchmark", "hydra", "data.source", "data.raw_dir",
                "data.cache_dir", "data.replica_dir", "data.use_cache", "loader.eval_batch_size",
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                "trainer.default_root_dir")
# A metric is lower-is-better when its name (test/<name>/<target>) matches; the monitored metric's
# direction comes from the record (task.monitor_mode).
LOWER_IS_BETTER = re.compile(r"(^|_)(loss|logloss|mae|rmse|mse|error)($|_)")


# ----------------------------------------------------------------------------------------------------
# statistics


class _StudentT:
    """Student t distribution: scipy.stats when installed, else the regularised incomplete beta
    function (continued fraction, Numerical Recipes 6.4), which agrees with scipy to ~1e-12."""

    def __init__(self) -> None:
        try:
            from scipy import stats
        except ImportError:  # pragma: no cover - exercised by tests through the fallback functions
            stats = None
        self._scipy = stats

    def ppf(self, q: float, df: float) -> float:
        if self._scipy is not None:
            return float(self._scipy.t.ppf(q, df))
        return t_ppf(q, df)

    def two_sided_p(self, t: float, df: float) -> float:
        if self._scipy is not None:
            return float(2.0 * self._scipy.t.sf(abs(t), df))
        return t_two_sided_p(t, df)


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for T ~ Student t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * t_two_sided_p(t, df)
    return 1.0 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student t (bisection on the cdf; q in (0, 1))."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q} outside (0, 1)")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


STUDENT_T = _StudentT()


@dataclass
class Stat:
    """A metric over seeds: mean +- half-width of the 95% confidence interval."""

    values: dict[int, float]  # seed -> value (finite values only)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(list(self.values.values()), ddof=1)) if self.n >= 2 else math.nan

    @property
    def ci95(self) -> float:
        """t_{0.975, n-1} * sd / sqrt(n); NaN for fewer than two seeds."""
        if self.n < 2:
            return math.nan
        return STUDENT_T.ppf(0.5 + CONFIDENCE / 2, self.n - 1) * self.sd / math.sqrt(self.n)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mean": _num(self.mean), "sd": _num(self.sd), "ci95": _num(self.ci95),
                "values": {str(seed): value for seed, value in sorted(self.values.items())}}


@dataclass
class Paired:
    """Paired t-test of a row against the reference row on the seeds both have."""

    n: int
    delta: float  # mean of (row - reference)
    t: float
    p: float  # two-sided; NaN when n < 2

    def to_json(self) -> dict[str, Any]:
        return {"n_pairs": self.n, "delta": _num(self.delta), "t": _num(self.t), "p": _num(self.p)}


def paired_t_test(a: dict[int, float], b: dict[int, float]) -> Paired:
    """Two-sided paired t-test of a vs b over the seeds in both (finite values).

    t = mean(d) / (sd(d) / sqrt(n)), d = a - b per seed, df = n - 1. Identical results on every seed
    give p = 1; a constant non-zero difference gives p = 0 (t is infinite). Fewer than 2 pairs: p = NaN.
    """
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan)
    delta = float(d.mean())
    if n < 2:
        return Paired(n, delta, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return Paired(n, delta, 0.0 if delta == 0 else math.copysign(math.inf, delta), 1.0 if delta == 0 else 0.0)
    t = delta / (sd / math.sqrt(n))
    return Paired(n, delta, t, STUDENT_T.two_sided_p(t, n - 1))


# ----------------------------------------------------------------------------------------------------
# reading records


@dataclass
class Run:
    """One run folder: a finished or failed record, or a run folder with no record (yet)."""

    path: Path  # the results.json (or the run folder when there is none)
    status: str  # finished | failed | no record | unreadable
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


# ----------------------------------------------------------------------------------------------------
# config keys


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
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
    for key, value in _flatten(config).items():
        if any(key == skip or key.startswith(skip + ".") for skip in NON_SEMANTIC):
            continue
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


# ----------------------------------------------------------------------------------------------------
# the leaderboard model


def lower_is_better(metric: str) -> bool:
    """metric: <split>/<name>/<target> (or any '/'-joined name): lower is better when a part after the
    split names an error or a loss (mae, rmse, logloss, ...)."""
    parts = metric.split("/")
    parts = parts[1:] if parts[0] in ("test", "valid", "train") else parts
    return any(LOWER_IS_BETTER.search(part) for part in parts)


@dataclass
class Row:
    key: str  # config key
    model: str
    task: str
    runs: list[Run]  # the counted runs: one per seed
    superseded: list[Run]
    label: str = ""
    role: str = ""  # proposed | baseline | ablation | "" (none declared)
    metrics: dict[str, Stat] = field(default_factory=dict)  # test metrics
    selection: Stat | None = None  # validation value of the monitored metric
    paired: dict[str, Paired] = field(default_factory=dict)  # metric -> test vs the reference row
    is_reference: bool = False

    @property
    def seeds(self) -> list[int]:
        return sorted(int(run.get("seed")) for run in self.runs)

    def mean_of(self, key: str) -> float:
        values = [float(run.get(key)) for run in self.runs if _finite(run.get(key))]
        return float(np.mean(values)) if values else math.nan


@dataclass
class Table:
    data: str
    data_source: str
    monitor: str  # e.g. valid/auc/mean
    mode: str  # max | min
    rows: list[Row]
    experiments: list[str]
    papers: list[str]
    roles_declared: bool
    reference: Row | None = None

    @property
    def primary(self) -> str:
        return "test/" + self.monitor.split("/", 1)[1] if "/" in self.monitor else self.monitor

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9_]+", "-", f"{self.data}-{self.data_source}-{self.primary[5:]}".lower()).strip("-")

    @property
    def title(self) -> str:
        return f"{self.data} · {self.data_source} data · selected on {self.monitor}"

    def all_metrics(self) -> list[str]:
        names = {m for row in self.rows for m in row.metrics}
        return sorted(names, key=lambda m: (m != self.primary, m))

    def headline_metrics(self) -> list[str]:
        """The primary metric, then per metric name its `mean` target if it has one, else each target."""
        names = self.all_metrics()
        has_mean = {m.split("/")[1] for m in names if m.count("/") == 2 and m.endswith("/mean")}
        keep = [m for m in names if m.count("/") != 2 or m.endswith("/mean") or m.split("/")[1] not in has_mean]
        return sorted(keep, key=lambda m: (m != self.primary, m))

    def direction(self, metric: str) -> str:
        if metric == self.primary:
            return self.mode
        return "min" if lower_is_better(metric) else "max"

    def best(self, metric: str) -> float:
        means = [row.metrics[metric].mean for row in self.rows if metric in row.metrics
                 and row.metrics[metric].n > 0]
        if not means:
            return math.nan
        return min(means) if self.direction(metric) == "min" else max(means)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _split_metrics(run: Run, split: str) -> dict[str, Any]:
    metrics = run.get("metrics")
    values = metrics.get(split) if isinstance(metrics, dict) else None
    return values if isinstance(values, dict) else {}


def _benchmark(run: Run) -> dict[str, Any]:
    return (run.get("config") or {}).get("benchmark") or {}


def build_tables(runs: Iterable[Run], baselines: Sequence[str] | None = None) -> list[Table]:
    finished = [run for run in runs if run.status == "finished"]
    grouped: dict[tuple[str, str, str, str], list[Run]] = {}
    for run in finished:
        monitor = run.get("monitor") or {}
        key = (str(run.get("data")), str(run.get("data_source", "unknown")), str(monitor.get("metric", "?")),
               str(monitor.get("mode", "max")))
        grouped.setdefault(key, []).append(run)
    tables = []
    for (data, source, monitor, mode), members in sorted(grouped.items()):
        tables.append(_build_table(data, source, monitor, mode, members, baselines))
    return tables


def _build_table(data: str, source: str, monitor: str, mode: str, members: list[Run],
                 baselines: Sequence[str] | None) -> Table:
    by_row: dict[str, list[Run]] = {}
    for run in members:
        by_row.setdefault(config_key(run.record), []).append(run)
    rows = []
    for key, runs in by_row.items():
        latest: dict[Any, Run] = {}
        superseded = []
        for run in sorted(runs, key=lambda r: (r.mtime, str(r.path))):
            seed = run.get("seed")
            if seed in latest:
                superseded.append(latest[seed])
            latest[seed] = run
        counted = [latest[s] for s in sorted(latest, key=lambda s: (str(type(s)), s))]
        first = counted[0]
        rows.append(Row(key, str(first.get("model")), str(first.get("task")), counted, superseded))
    # labels: the model name, plus what differs where one model has several config keys
    for model in {row.model for row in rows}:
        same = [row for row in rows if row.model == model]
        suffixes = distinguishing_suffixes({row.key: semantic_config(row.runs[0].record) for row in same},
                                           {row.key: row.task for row in same})
        for row in same:
            row.label = row.model + (f" ({suffixes[row.key]})" if suffixes[row.key] else "")
    # statistics
    for row in rows:
        names = {m for run in row.runs for m in _split_metrics(run, "test") if m != "epoch"}
        for name in names:
            row.metrics[name] = Stat({int(run.get("seed")): float(_split_metrics(run, "test")[name])
                                      for run in row.runs if _finite(_split_metrics(run, "test").get(name))})
        row.selection = Stat({int(run.get("seed")): float(_split_metrics(run, "valid")[monitor])
                              for run in row.runs if _finite(_split_metrics(run, "valid").get(monitor))})
    # roles: --baselines, else the experiment configs' benchmark blocks
    declared: dict[str, set[str]] = {"proposed": set(), "baselines": set(), "ablations": set()}
    experiments, papers = set(), set()
    for run in members:
        bench = _benchmark(run)
        for role in declared:
            declared[role].update(str(m) for m in bench.get(role) or [])
        if bench.get("name"):
            experiments.add(str(bench["name"]))
        if bench.get("paper"):
            papers.add(str(bench["paper"]))
    if baselines:
        declared = {"proposed": set(), "baselines": set(baselines), "ablations": set()}
    roles_declared = any(declared.values())
    for row in rows:
        row.role = ("proposed" if row.model in declared["proposed"] else
                    "ablation" if row.model in declared["ablations"] else
                    "baseline" if row.model in declared["baselines"] else "")
    table = Table(data, source, monitor, mode, rows, sorted(experiments), sorted(papers), roles_declared)
    # the reference: the best baseline by the validation value of the monitored metric
    candidates = [row for row in rows if (row.role == "baseline" if declared["baselines"] else True)
                  and row.selection is not None and row.selection.n > 0]
    if candidates:
        pick = min if mode == "min" else max
        table.reference = pick(candidates, key=lambda row: row.selection.mean)
        table.reference.is_reference = True
        for row in rows:
            if row is table.reference:
                continue
            for name, stat in row.metrics.items():
                if name in table.reference.metrics:
                    row.paired[name] = paired_t_test(stat.values, table.reference.metrics[name].values)
    # order: best first by the primary test metric; rows without it last
    sign = 1.0 if mode == "min" else -1.0

    def order(row: Row) -> tuple:
        stat = row.metrics.get(table.primary)
        missing = stat is None or stat.n == 0
        return (missing, 0.0 if missing else sign * stat.mean, row.label)

    rows.sort(key=order)
    return table


# ----------------------------------------------------------------------------------------------------
# formatting


def _num(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def fmt(value: float, digits: int | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if digits is None:
        digits = 4 if abs(value) < 10 else 2 if abs(value) < 1000 else 0
    return f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"


def fmt_stat(stat: Stat | None) -> str:
    if stat is None or stat.n == 0:
        return "–"
    if stat.n < 2:
        return f"{fmt(stat.mean)} (n=1)"
    digits = 4 if abs(stat.mean) < 10 else 2
    return f"{fmt(stat.mean, digits)} ± {fmt(stat.ci95, digits)}"


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_paired(row: Row, table: Table) -> str:
    if row.is_reference:
        return "reference"
    test = row.paired.get(table.primary)
    if test is None or test.n == 0:
        return "no common seeds"
    digits = 4 if abs(test.delta) < 10 else 2
    text = f"{test.delta:+.{digits}f}"
    if test.n < 2:
        return f"{text} (1 seed, no test)"
    return f"{text} ({fmt_p(test.p)}, n={test.n})" + (" *" if test.p < SIGNIFICANCE else "")


def short_metric(metric: str) -> str:
    return metric.removeprefix("test/")


def _arrow(table: Table, metric: str) -> str:
    return "↓" if table.direction(metric) == "min" else "↑"


def _is_best(table: Table, metric: str, stat: Stat | None) -> bool:
    best = table.best(metric)
    return (stat is not None and stat.n > 0 and math.isfinite(best)
            and math.isclose(stat.mean, best, rel_tol=0, abs_tol=1e-12))


def _rel(path: Path) -> str:
    """A path below the working directory relative to it, any other path absolute."""
    try:
        absolute = Path(os.path.abspath(path))
        return str(absolute.relative_to(Path.cwd())) or "."
    except (ValueError, OSError):
        return str(path)


DEFINITIONS = [
    ("mean ± CI",
     ("mean over seeds ± half-width of the 95% confidence interval of the mean, t_{0.975, n−1} · sd / "
      "√n (sd with n − 1 in the denominator; Student t quantile); a single seed is shown as (n=1) "
      "without an interval.")),
    ("seeds",
     ("number of seeds with a finished record; one record per seed counts (a re-run of the same config "
      "and seed replaces the older record, which is listed as superseded).")),
    ("best",
     ("the best mean of each column is in bold (↑ higher is better, ↓ lower is better; the direction of"
      " the monitored metric comes from task.monitor_mode).")),
    ("reference",
     ("the baseline row with the best validation value of the monitored metric (mean over seeds); the "
      "test set is never used to choose it. Baselines come from the experiment config's "
      "`benchmark.baselines` or `--baselines`; with none declared every row is a candidate.")),
    ("Δ vs reference",
     ("mean over the seeds both rows have of (row − reference) on the test value of the monitored "
      "metric, with the two-sided paired t-test p-value on those seeds (df = pairs − 1); * marks p < "
      "0.05. No correction for multiple comparisons. Identical values on every seed give p = 1; fewer "
      "than 2 common seeds give no test.")),
    ("rows",
     ("one row per model and config key: the resolved config minus the seed and settings that cannot "
      "change results (paths, logger, progress bar, log interval, evaluation batch size, data "
      "location), plus the dataset fingerprint. Records with different keys are never averaged; rows of"
      " one model are told apart by a suffix naming what differs.")),
    ("tables",
     ("one table per (dataset, data source, monitored metric): synthetic-replica and real data never "
      "share a table.")),
    ("train s, samples/s",
     ("mean over seeds of the wall time of Trainer.fit (validation included) and of the training "
      "throughput (training batches only).")),
]


# ----------------------------------------------------------------------------------------------------
# plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


ROLE_COLOURS = {"proposed": "#d1495b", "ablation": "#edae49", "baseline": "#00798c", "": "#30638e"}


def plot_bars(table: Table) -> bytes:
    """One panel per headline metric: a horizontal bar per row, error bar = 95% CI, best bar outlined."""
    plt = _plt()
    metrics = table.headline_metrics()
    cols = min(2, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    panel_height = 0.32 * len(table.rows) + 1.1
    fig, axes = plt.subplots(nrows, cols, figsize=(7.0 * cols, panel_height * nrows), squeeze=False)
    labels = [row.label if len(row.label) <= 40 else row.label[:37] + "..." for row in table.rows]
    y = np.arange(len(table.rows))
    for ax, metric in zip(axes.flat, metrics):
        stats = [row.metrics.get(metric) for row in table.rows]
        means = np.array([s.mean if s and s.n else np.nan for s in stats])
        errors = np.array([s.ci95 if s and s.n > 1 else 0.0 for s in stats])
        colours = [ROLE_COLOURS.get(row.role, ROLE_COLOURS[""]) for row in table.rows]
        finite = np.isfinite(means)
        bars = ax.barh(y, np.where(finite, means, 0.0), xerr=np.where(finite, errors, 0.0), color=colours,
                       capsize=3, edgecolor="black",
                       linewidth=[2.0 if _is_best(table, metric, s) else 0.0 for s in stats])
        zoomed = False
        if finite.any():
            lo = float(np.min(means[finite] - errors[finite]))
            hi = float(np.max(means[finite] + errors[finite]))
            pad = 0.15 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-6)
            # start at 0 unless that squeezes the differences into a sliver (then say so in the title)
            left = 0.0 if lo - pad <= 0.5 * hi else lo - pad
            left = min(left, lo - pad) if lo < 0 else left
            zoomed = left > 0
            ax.set_xlim(left, hi + pad)
        for bar, ok in zip(bars, finite):
            if not ok:
                bar.set_visible(False)
        for yi, ok in zip(y, finite):
            if not ok:
                ax.text(0.01, yi, "no value", transform=ax.get_yaxis_transform(), va="center", fontsize=7,
                        color="#777")
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()  # the table's order, best first
        ax.set_title(f"{short_metric(metric)} {_arrow(table, metric)}" + ("  (axis zoomed)" if zoomed else ""),
                     fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"{table.title}: test mean ± 95% CI over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # leave room for the suptitle
    return _png(fig, plt)


def _train_loss(run: Run) -> dict[int, float]:
    """Per-epoch training loss from the run's CSV logger file, when the run used logger=csv."""
    path = run.run_dir / "csv" / "metrics.csv"
    out: dict[int, float] = {}
    try:
        with path.open(newline="") as handle:
            for line in csv.DictReader(handle):
                value = line.get("train/loss_epoch")
                if value:
                    out[int(float(line["epoch"]))] = float(value)
    except (OSError, KeyError, ValueError):
        return {}
    return out


def plot_curves(table: Table) -> bytes | None:
    """Per epoch: the monitored validation metric (and the training loss when a CSV log exists);
    line = mean over seeds, band = min..max over seeds."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    panels = [(table.monitor, lambda run: {int(h["epoch"]): float(h[table.monitor]) for h in run.get("history") or []
                                           if "epoch" in h and _finite(h.get(table.monitor))})]
    losses = {id(run): _train_loss(run) for row in table.rows for run in row.runs}
    if any(losses.values()):
        panels.append(("train/loss (epoch mean)", lambda run: losses[id(run)]))
    drawn = False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 3.8), squeeze=False)
    for ax, (name, series) in zip(axes.flat, panels):
        for row in table.rows:
            curves = [series(run) for run in row.runs]
            epochs = sorted({e for c in curves for e in c})
            if not epochs:
                continue
            values = [[c[e] for c in curves if e in c] for e in epochs]
            mean = np.array([np.mean(v) for v in values])
            line, = ax.plot(epochs, mean, marker="o", markersize=3, label=row.label)
            if len(curves) > 1:
                ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values],
                                color=line.get_color(), alpha=0.15)
            drawn = True
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle(f"{table.title}: training curves (mean over seeds, band = min..max)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # leave room for the suptitle
    return _png(fig, plt)


def _png(fig, plt) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# rendering


@dataclass
class Report:
    tables: list[Table]
    runs: list[Run]
    folders: list[Path]
    generated: str
    plots: dict[str, dict[str, str]] = field(default_factory=dict)  # slug -> {"bars": file name, ...}
    plot_note: str = ""

    @property
    def without_results(self) -> list[Run]:
        return [run for run in self.runs if run.status != "finished"]

    def superseded(self) -> list[Run]:
        return [run for table in self.tables for row in table.rows for run in row.superseded]


def _table_header(table: Table) -> list[str]:
    ref = table.reference.label if table.reference else "reference"
    return (["model", "role", "task", "seeds"]
            + [f"{short_metric(m)} {_arrow(table, m)}" for m in table.headline_metrics()]
            + [f"Δ {short_metric(table.primary)} vs {ref}", "train s", "samples/s", "parameters"])


def _table_cells(table: Table, row: Row) -> list[tuple[str, bool]]:
    """(text, is_best) per column."""
    cells = [(row.label, False), (row.role or "–", False), (row.task, False), (str(len(row.runs)), False)]
    for metric in table.headline_metrics():
        stat = row.metrics.get(metric)
        cells.append((fmt_stat(stat), _is_best(table, metric, stat)))
    params = row.mean_of("parameters")
    cells += [(fmt_paired(row, table), False), (fmt(row.mean_of("train_seconds"), 1), False),
              (fmt(row.mean_of("train_samples_per_second"), 0), False),
              (f"{params:,.0f}" if math.isfinite(params) else "–", False)]
    return cells


def _caption_lines(table: Table) -> list[str]:
    lines = []
    if table.experiments:
        lines.append("Experiment: " + ", ".join(table.experiments)
                     + (f" — {'; '.join(table.papers)}" if table.papers else ""))
    if table.data_source != "raw":
        lines.append(f"Data source: {table.data_source}. Numbers on the synthetic replica show that a mechanism "
                     "is measurable; they are not comparable with published numbers on the real data.")
    if not table.roles_declared:
        lines.append("No baselines declared (no experiment config, no --baselines): the reference is the best "
                     "row by the validation metric.")
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: Report) -> str:
    out = ["# recbench leaderboard", "",
           f"Generated {report.generated} by `python -m recbench.report` from "
           f"{sum(r.status == 'finished' for r in report.runs)} finished records under "
           + ", ".join(f"`{_rel(f)}`" for f in report.folders) + ". Test metrics; mean ± 95% CI over seeds "
           "(definitions at the end).", ""]
    if not report.tables:
        out += ["No finished runs.", ""]
    for table in report.tables:
        out += [f"## {table.title}", ""]
        out += [f"{line}  " for line in _caption_lines(table)] + [""]
        header = _table_header(table)
        out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
        out.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
        for row in table.rows:
            cells = [f"**{_md_escape(t)}**" if best else _md_escape(t) for t, best in _table_cells(table, row)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        for kind, title in (("bars", "test metrics"), ("curves", "training curves")):
            name = report.plots.get(table.slug, {}).get(kind)
            if name:
                out += [f"![{table.title}: {title}]({PLOTS_DIR}/{name})", ""]
    if report.plot_note:
        out += [f"Plots: {report.plot_note}", ""]
    if report.without_results:
        out += ["## Runs without results", "", "| run | model | data | seed | status | error |",
                "|---|---|---|---:|---|---|"]
        for run in report.without_results:
            out.append("| " + " | ".join(_md_escape(str(v)) for v in (
                _rel(run.run_dir), run.get("model", "?"), run.get("data", "?"), run.get("seed", "?"),
                run.status, run.error or "–")) + " |")
        out.append("")
    superseded = report.superseded()
    if superseded:
        out += ["## Superseded records (same config and seed as a newer record; not counted)", ""]
        out += [f"- `{_rel(run.path)}`" for run in superseded] + [""]
    out += ["## Definitions", ""]
    out += [f"- **{name}**: {text}" for name, text in DEFINITIONS]
    out += _metric_definitions_md(report) + [""]
    return "\n".join(out)


def _metric_definitions(report: Report) -> dict[str, str]:
    merged: dict[str, str] = {}
    for table in report.tables:
        for row in table.rows:
            for run in row.runs:
                for name, text in (run.get("metric_definitions") or {}).items():
                    merged.setdefault(name, str(text))
    return dict(sorted(merged.items()))


def _metric_definitions_md(report: Report) -> list[str]:
    definitions = _metric_definitions(report)
    if not definitions:
        return []
    return ["", "Metrics (as recorded by the runs):", ""] + [f"- **{k}**: {v}" for k, v in definitions.items()]


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1400px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.3em .55em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.text,th.text{text-align:left}
td.best{font-weight:bold;background:#e8f5e9}
tr.reference td{background:#fffbe6}
.note{color:#555;font-size:.9em;margin:.2em 0}
.warn{color:#8a4b00}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.scroll{overflow-x:auto}
details{margin:.5em 0}summary{cursor:pointer;color:#30638e}
dl dt{font-weight:bold;margin-top:.5em}dl dd{margin-left:1.5em}
footer{margin-top:3em;font-size:.85em;color:#444}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(report: Report, images: dict[str, bytes]) -> str:
    """One self-contained page: inline CSS, plots as data: URIs, no script."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">', "<title>recbench leaderboard</title>",
           f"<style>{CSS}</style></head><body>", "<h1>recbench leaderboard</h1>",
           f'<p class="note">Generated {_h(report.generated)} by <code>python -m recbench.report</code> from '
           f"{sum(r.status == 'finished' for r in report.runs)} finished records under "
           + ", ".join(f"<code>{_h(_rel(f))}</code>" for f in report.folders)
           + ". Test metrics; mean ± 95% CI over seeds (definitions below).</p>"]
    if not report.tables:
        out.append("<p>No finished runs.</p>")
    for table in report.tables:
        out.append(f'<h2 id="{_h(table.slug)}">{_h(table.title)}</h2>')
        for line in _caption_lines(table):
            cls = "note warn" if line.startswith("Data source") else "note"
            out.append(f'<p class="{cls}">{_h(line)}</p>')
        header = _table_header(table)
        out.append('<div class="scroll"><table><thead><tr>' + "".join(
            f'<th class="{"text" if i < 3 else ""}">{_h(h)}</th>' for i, h in enumerate(header))
            + "</tr></thead><tbody>")
        for row in table.rows:
            cells = _table_cells(table, row)
            out.append(f'<tr class="{"reference" if row.is_reference else ""}">' + "".join(
                f'<td class="{"text" if i < 3 else ""}{" best" if best else ""}">{_h(text)}</td>'
                for i, (text, best) in enumerate(cells)) + "</tr>")
        out.append("</tbody></table></div>")
        for kind, alt in (("bars", "test metrics, mean ± 95% CI"), ("curves", "training curves")):
            name = report.plots.get(table.slug, {}).get(kind)
            if name and name in images:
                data = base64.b64encode(images[name]).decode()
                out.append(f'<img alt="{_h(table.title)}: {_h(alt)}" src="data:image/png;base64,{data}">')
        out.append(_html_all_metrics(table))
        out.append(_html_runs(table))
    if report.plot_note:
        out.append(f'<p class="note warn">Plots: {_h(report.plot_note)}</p>')
    if report.without_results:
        out.append("<h2>Runs without results</h2><table><thead><tr>" + "".join(
            f'<th class="text">{h}</th>' for h in ("run", "model", "data", "seed", "status", "error"))
            + "</tr></thead><tbody>")
        for run in report.without_results:
            out.append("<tr>" + "".join(f'<td class="text">{_h(v)}</td>' for v in (
                _rel(run.run_dir), run.get("model", "?"), run.get("data", "?"), run.get("seed", "?"),
                run.status, run.error or "–")) + "</tr>")
        out.append("</tbody></table>")
    superseded = report.superseded()
    if superseded:
        out.append("<h2>Superseded records</h2>"
                   "<p class='note'>Same config and seed as a newer record; not counted.</p><ul>"
                   + "".join(f"<li><code>{_h(_rel(run.path))}</code></li>" for run in superseded) + "</ul>")
    out.append("<footer><h2>Definitions</h2><dl>" + "".join(
        f"<dt>{_h(name)}</dt><dd>{_h(text)}</dd>" for name, text in DEFINITIONS) + "</dl>")
    definitions = _metric_definitions(report)
    if definitions:
        out.append("<h3>Metrics (as recorded by the runs)</h3><dl>" + "".join(
            f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in definitions.items()) + "</dl>")
    out.append("</footer></body></html>")
    return "\n".join(out)


def _html_all_metrics(table: Table) -> str:
    metrics = table.all_metrics()
    out = ["<details><summary>All test metrics</summary><div class='scroll'><table><thead><tr>"
           "<th class='text'>model</th>"
           + "".join(f"<th>{_h(short_metric(m))} {_arrow(table, m)}</th>" for m in metrics) + "</tr></thead><tbody>"]
    for row in table.rows:
        out.append(f"<tr><td class='text'>{_h(row.label)}</td>" + "".join(
            f"<td class='{'best' if _is_best(table, m, row.metrics.get(m)) else ''}'>"
            f"{_h(fmt_stat(row.metrics.get(m)))}</td>"
            for m in metrics) + "</tr>")
    out.append("</tbody></table></div></details>")
    return "".join(out)


def _html_runs(table: Table) -> str:
    out = ["<details><summary>Runs</summary><div class='scroll'><table><thead><tr>" + "".join(
        f"<th class='text'>{h}</th>" for h in ("model", "config key", "seed", "run", f"valid {table.monitor}",
                                                f"{short_metric(table.primary)}", "train s", "git commit"))
        + "</tr></thead><tbody>"]
    for row in table.rows:
        for run in row.runs:
            metrics = run.get("metrics") or {}
            out.append("<tr>" + "".join(f"<td class='text'>{_h(v)}</td>" for v in (
                row.label, row.key, run.get("seed"), _rel(run.run_dir),
                fmt(metrics.get("valid", {}).get(table.monitor, math.nan)),
                fmt(metrics.get("test", {}).get(table.primary, math.nan)),
                fmt(run.get("train_seconds", math.nan), 1), (run.get("git_commit") or "–")[:10])) + "</tr>")
    out.append("</tbody></table></div></details>")
    return "".join(out)


CSV_COLUMNS = ["status", "data", "data_source", "monitor", "model", "label", "config_key", "role", "task",
               "reference", "metric", "direction", "n", "mean", "sd", "ci95", "seeds", "values",
               "delta_vs_reference", "p_value", "n_pairs", "train_seconds_mean", "samples_per_second_mean",
               "parameters", "run", "error"]


def render_csv(report: Report) -> str:
    """Long format: one line per (table, row, metric); runs without results as status lines."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for table in report.tables:
        for row in table.rows:
            for metric in table.all_metrics():
                stat = row.metrics.get(metric, Stat({}))
                test = row.paired.get(metric)
                writer.writerow({
                    "status": "finished", "data": table.data, "data_source": table.data_source,
                    "monitor": table.monitor, "model": row.model, "label": row.label, "config_key": row.key,
                    "role": row.role, "task": row.task, "reference": table.reference.label if table.reference else "",
                    "metric": metric, "direction": table.direction(metric), "n": stat.n, "mean": _csv(stat.mean),
                    "sd": _csv(stat.sd), "ci95": _csv(stat.ci95), "seeds": " ".join(map(str, sorted(stat.values))),
                    "values": " ".join(repr(stat.values[s]) for s in sorted(stat.values)),
                    "delta_vs_reference": _csv(test.delta) if test else "", "p_value": _csv(test.p) if test else "",
                    "n_pairs": test.n if test else "", "train_seconds_mean": _csv(row.mean_of("train_seconds")),
                    "samples_per_second_mean": _csv(row.mean_of("train_samples_per_second")),
                    "parameters": _csv(row.mean_of("parameters")), "run": "", "error": ""})
    for run in report.without_results:
        writer.writerow({"status": run.status, "data": run.get("data", ""), "model": run.get("model", ""),
                         "label": run.get("model", ""), "task": run.get("task", ""), "seeds": run.get("seed", ""),
                         "run": _rel(run.run_dir), "error": run.error})
    return buffer.getvalue()


def _csv(value: float) -> str:
    return repr(float(value)) if value is not None and math.isfinite(value) else ""


def render_json(report: Report) -> dict[str, Any]:
    tables = []
    for table in report.tables:
        tables.append({
            "data": table.data, "data_source": table.data_source, "monitor": table.monitor, "mode": table.mode,
            "primary_metric": table.primary, "experiments": table.experiments, "papers": table.papers,
            "reference": table.reference.label if table.reference else None,
            "plots": {k: f"{PLOTS_DIR}/{v}" for k, v in report.plots.get(table.slug, {}).items()},
            "rows": [{
                "label": row.label, "model": row.model, "config_key": row.key, "role": row.role, "task": row.task,
                "is_reference": row.is_reference, "seeds": row.seeds, "n_seeds": len(row.runs),
                "metrics": {m: s.to_json() for m, s in sorted(row.metrics.items())},
                "selection": row.selection.to_json() if row.selection else None,
                "paired_vs_reference": {m: p.to_json() for m, p in sorted(row.paired.items())},
                "train_seconds_mean": _num(row.mean_of("train_seconds")),
                "samples_per_second_mean": _num(row.mean_of("train_samples_per_second")),
                "parameters": _num(row.mean_of("parameters")),
                "runs": [_rel(run.path) for run in row.runs],
                "superseded": [_rel(run.path) for run in row.superseded],
                "git_commits": sorted({str(run.get("git_commit")) for run in row.runs}),
                "config": semantic_config(row.runs[0].record)} for row in table.rows]})
    return {"generated": report.generated, "folders": [str(f) for f in report.folders],
            "definitions": dict(DEFINITIONS),
            "metric_definitions": _metric_definitions(report), "tables": tables,
            "runs_without_results": [{"run": _rel(run.run_dir), "status": run.status, "model": run.get("model"),
                                      "data": run.get("data"), "seed": run.get("seed"), "error": run.error}
                                     for run in report.without_results]}


# ----------------------------------------------------------------------------------------------------
# writing


def write_atomic(path: Path, payload: bytes | str) -> None:
    """Temp file in the same folder, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = payload.encode() if isinstance(payload, str) else payload
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_report(folders: Sequence[Path], baselines: Sequence[str] | None = None) -> Report:
    runs = find_runs(folders)
    if not runs:
        shown = ", ".join(str(f) for f in folders)
        raise UserInputError(f"{shown}: no results.json and no run folder found below it. Fix: run "
                             "`python -m recbench ...` (or `-m` for a sweep) first, or pass the folder that "
                             "holds the runs (default experiments/)")
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Report(build_tables(runs, baselines), runs, list(folders), generated)


def write_report(report: Report, out_dir: Path, formats: Sequence[str], plots: bool = True) -> list[Path]:
    written: list[Path] = []
    images: dict[str, bytes] = {}
    if ("md" in formats or "html" in formats) and plots and report.tables:
        try:
            _plt()
        except ImportError:
            report.plot_note = "skipped: matplotlib is not installed (pip install matplotlib)"
        else:
            for table in report.tables:
                names = {}
                for kind, draw in (("bars", plot_bars), ("curves", plot_curves)):
                    png = draw(table)
                    if png:
                        names[kind] = f"{table.slug}_{kind}.png"
                        images[names[kind]] = png
                report.plots[table.slug] = names
    if "md" in formats:  # the markdown links the PNG files; the html inlines them
        for name, png in images.items():
            write_atomic(out_dir / PLOTS_DIR / name, png)
            written.append(out_dir / PLOTS_DIR / name)
        stale = out_dir / PLOTS_DIR
        if stale.is_dir():
            for old in stale.glob("*.png"):
                if old.name not in images:
                    old.unlink(missing_ok=True)
    renderers = {"md": lambda: render_markdown(report), "html": lambda: render_html(report, images),
                 "csv": lambda: render_csv(report),
                 "json": lambda: json.dumps(render_json(report), indent=1, sort_keys=False) + "\n"}
    for fmt_name in formats:
        path = out_dir / f"{OUTPUT_STEM}.{fmt_name}"
        write_atomic(path, renderers[fmt_name]())
        written.append(path)
    return written


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recbench.report",
        description="Leaderboard from the results.json records below the given folders: mean ± 95%% CI over "
                    "seeds, paired t-test against the best baseline, plots.")
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("experiments")],
                        help="folders to search for results.json (default: experiments)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the first folder given)")
    parser.add_argument("--format", default="md,html",
                        help="comma-separated: md, html, csv, json (default: md,html)")
    parser.add_argument("--baselines", default=None,
                        help="comma-separated baseline models (default: the experiment configs' benchmark.baselines)")
    parser.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise UserInputError(f"--format {args.format}: unknown format {', '.join(unknown) or '(none)'}. "
                                 f"Fix: use a comma-separated subset of {', '.join(FORMATS)}")
        baselines = [b.strip() for b in args.baselines.split(",") if b.strip()] if args.baselines else None
        report = make_report(args.folders, baselines)
        out_dir = args.out or (args.folders[0] if args.folders[0].is_dir() else args.folders[0].parent)
        written = write_report(report, out_dir, formats, plots=not args.no_plots)
    except UserInputError as error:
        print(f"recbench: error: {error}", file=sys.stderr)
        return 2
    finished = sum(run.status == "finished" for run in report.runs)
    print(f"recbench report: {finished} finished runs in {len(report.tables)} tables, "
          f"{len(report.without_results)} runs without results")
    for table in report.tables:
        ref = f", reference {table.reference.label}" if table.reference else ""
        print(f"  {table.title}: {len(table.rows)} rows{ref}")
    for path in written:
        if path.suffix != ".png":
            print(f"wrote {_rel(path)}")
    if report.plot_note:
        print(f"plots {report.plot_note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
