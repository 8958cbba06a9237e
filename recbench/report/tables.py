"""The leaderboard model: records -> tables of rows (one per model and config key) with their statistics,
roles and reference row."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recbench.report.collect import (Run, config_key, distinguishing_suffixes, fixed_settings, semantic_config,
                                     shared_config, table_key)
from recbench.report.statistics import Paired, Stat, paired_t_test

# A metric is lower-is-better when its name (test/<name>/<target>) matches; the monitored metric's
# direction comes from the record (task.monitor_mode).
LOWER_IS_BETTER = re.compile(r"(^|_)(loss|logloss|mae|rmse|mse|error)($|_)")

# The first part of a metric name: where it was measured. `progressive` is progressive validation on the
# training stream (each time slice scored by the model trained on everything before it).
METRIC_SPLITS = ("test", "valid", "train", "progressive")
# The record sections (metrics[<split>]) that become leaderboard columns, in column order: the fixed test
# days first, then (where a run has it) the progressive metric of the training stream.
LEADERBOARD_SPLITS = ("test", "progressive")


def lower_is_better(metric: str) -> bool:
    """metric: <split>/<name>/<target> (or any '/'-joined name): lower is better when a part after the
    split names an error or a loss (mae, rmse, logloss, ...)."""
    parts = metric.split("/")
    parts = parts[1:] if parts[0] in METRIC_SPLITS else parts
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
    metrics: dict[str, Stat] = field(default_factory=dict)  # test/... and progressive/... metrics
    selection: Stat | None = None  # validation value of the monitored metric
    paired: dict[str, Paired] = field(default_factory=dict)  # metric -> this row vs the reference row
    is_reference: bool = False

    @property
    def seeds(self) -> list[int]:
        return sorted(int(run.get("seed")) for run in self.runs)

    def mean_of(self, key: str) -> float:
        values = [float(run.get(key)) for run in self.runs if _finite(run.get(key))]
        return float(np.mean(values)) if values else math.nan

    def curve_values(self, metric: str) -> dict[str, list[float]]:
        """Bucket label -> the finite values of one progressive-curve metric over this row's seeds
        (a bucket with no positive has NaN: it is left out, not counted as 0)."""
        out: dict[str, list[float]] = {}
        for run in self.runs:
            for bucket in _curve(run):
                if _finite(bucket.get(metric)):
                    out.setdefault(_bucket_label(bucket), []).append(float(bucket[metric]))
        return out


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
    key: str = ""  # table key: the hash of the settings its rows share (collect.table_key)
    fixed: dict[str, str] = field(default_factory=dict)  # the shared settings that set it apart from its siblings

    @property
    def primary(self) -> str:
        return "test/" + self.monitor.split("/", 1)[1] if "/" in self.monitor else self.monitor

    @property
    def slug(self) -> str:
        # a dataset with several tables (other settings) needs the table key to keep file names apart
        text = f"{self.data}-{self.data_source}-{self.primary[5:]}" + (f"-{self.key[:6]}" if self.fixed else "")
        return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")

    @property
    def heading(self) -> str:
        """What the table fixes, e.g. `data=tmall, data.replica.n_users=600, trainer.max_epochs=1`."""
        return ", ".join([f"data={self.data}"] + [f"{key}={value}" for key, value in self.fixed.items()])

    @property
    def title(self) -> str:
        return f"{self.heading} · {self.data_source} data · selected on {self.monitor}"

    @property
    def has_progressive(self) -> bool:
        return any(m.startswith("progressive/") for row in self.rows for m in row.metrics)

    @property
    def progressive_primary(self) -> str | None:
        """The progressive column compared with the reference, as the primary is for the test columns."""
        return self._progressive_pick({m for row in self.rows for m in row.metrics})

    @property
    def curve_metric(self) -> str | None:
        """The metric of the progressive curve (plot and per-day table), among those with a value."""
        return self._progressive_pick({k for row in self.rows for run in row.runs for b in _curve(run)
                                       for k, v in b.items() if _finite(v)})

    def _progressive_pick(self, names: set[str]) -> str | None:
        """The progressive counterpart of the monitored metric (valid/auc/mean -> progressive/auc/mean)
        when among names, else the first progressive metric by name; None without any."""
        progressive = sorted(m for m in names if m.startswith("progressive/"))
        counterpart = "progressive/" + self.monitor.split("/", 1)[-1]
        return counterpart if counterpart in progressive else (progressive[0] if progressive else None)

    def all_metrics(self) -> list[str]:
        """Test metrics (the primary first), then progressive ones (also sorted by name)."""
        names = {m for row in self.rows for m in row.metrics}
        return sorted(names, key=lambda m: (m.startswith("progressive/"), m != self.primary, m))

    def headline_metrics(self) -> list[str]:
        """Per split (test, then progressive): its primary metric, then per metric name its `mean` target
        if it has one, else each target."""
        names = self.all_metrics()
        has_mean = {m.rsplit("/", 1)[0] for m in names if m.count("/") == 2 and m.endswith("/mean")}
        keep = [m for m in names if m.count("/") != 2 or m.endswith("/mean") or m.rsplit("/", 1)[0] not in has_mean]
        leads = (self.primary, self.progressive_primary)
        return sorted(keep, key=lambda m: (m.startswith("progressive/"), m not in leads, m))

    def curve_labels(self) -> list[str]:
        """Every progressive-curve bucket of the table's runs, in time order (a bucket without a value,
        e.g. no positive that day, stays: the axis keeps its days)."""
        starts: dict[str, float] = {}
        for row in self.rows:
            for run in row.runs:
                for bucket in _curve(run):
                    start = bucket.get("start") if _finite(bucket.get("start")) else math.inf
                    starts[_bucket_label(bucket)] = min(starts.get(_bucket_label(bucket), math.inf), start)
        return sorted(starts, key=lambda label: (starts[label], label))

    def progressive_curve(self) -> tuple[str, list[str], list[list[float]]] | None:
        """(curve metric, bucket labels, per row the means) where the runs have a curve, else None."""
        metric = self.curve_metric
        return (metric, *self.curve_means(metric)) if metric else None

    def curve_means(self, metric: str) -> tuple[list[str], list[list[float]]]:
        """(bucket labels in time order, per row in table order: the mean over its seeds per bucket)."""
        labels = self.curve_labels()
        values = [row.curve_values(metric) for row in self.rows]
        return labels, [[float(np.mean(v[label])) if label in v else math.nan for label in labels] for v in values]

    def direction(self, metric: str) -> str:
        # the monitored metric's mode (task.monitor_mode) holds for its test and progressive values
        if metric in (self.primary, "progressive/" + self.monitor.split("/", 1)[-1]):
            return self.mode
        return "min" if lower_is_better(metric) else "max"

    def models_with(self, metric: str) -> set[str]:
        """The models with a value of the metric in this table."""
        return {row.model for row in self.rows if metric in row.metrics and row.metrics[metric].n > 0}

    def best(self, metric: str) -> float:
        """The best row mean; NaN unless two or more models report the metric (one model is no contest)."""
        if len(self.models_with(metric)) < 2:
            return math.nan
        means = [row.metrics[metric].mean for row in self.rows if metric in row.metrics
                 and row.metrics[metric].n > 0]
        return min(means) if self.direction(metric) == "min" else max(means)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _split_metrics(run: Run, split: str) -> dict[str, Any]:
    metrics = run.get("metrics")
    values = metrics.get(split) if isinstance(metrics, dict) else None
    return values if isinstance(values, dict) else {}


def _curve(run: Run) -> list[dict[str, Any]]:
    """The run's progressive-validation buckets (time slices of the training stream); [] without them."""
    curve = run.get("progressive_curve")
    return [bucket for bucket in curve if isinstance(bucket, dict)] if isinstance(curve, list) else []


def _bucket_label(bucket: dict[str, Any]) -> str:
    return str(bucket.get("label") if bucket.get("label") is not None else bucket.get("start"))


def _benchmark(run: Run) -> dict[str, Any]:
    return (run.get("config") or {}).get("benchmark") or {}


def ranked(run: Run) -> bool:
    """Whether a finished record belongs in a leaderboard: not a re-evaluation of a checkpoint (`python -m
    recbench eval`: the training run's own record is there) and not a debug run (fast_dev_run, overfit or
    limited batches: scored on a few batches)."""
    trainer = (run.get("config") or {}).get("trainer") or {}
    limited = any(trainer.get(f"limit_{split}_batches") is not None for split in ("train", "val", "test"))
    debug = trainer.get("fast_dev_run") or (trainer.get("overfit_batches") or 0) > 0 or limited
    return run.get("mode", "train") != "eval" and not debug


def build_tables(runs: Iterable[Run], baselines: Sequence[str] | None = None,
                 reference: str | None = None) -> list[Table]:
    """One table per (dataset, data source, monitored metric, shared settings): the rows of a table differ
    only in the model, its own keys (collect.MODEL_OWNED) and the seed, so every comparison in it (best
    marks, paired tests) is between runs on the same data with the same training budget. `reference`: the
    label of the row every other row is compared with (e.g. "llm_alignment"), instead of the best
    baseline, in each table that has it; a UserInputError names the labels when no
    table has that row."""
    finished = [run for run in runs if run.status == "finished" and ranked(run)]
    grouped: dict[tuple[str, str, str, str, str], list[Run]] = {}
    for run in finished:
        monitor = run.get("monitor") or {}
        key = (str(run.get("data")), str(run.get("data_source", "unknown")), str(monitor.get("metric", "?")),
               str(monitor.get("mode", "max")), table_key(run.record))
        grouped.setdefault(key, []).append(run)
    tables = []
    for (data, source, monitor, mode, key), members in grouped.items():
        table = _build_table(data, source, monitor, mode, members, baselines, reference)
        table.key = key
        tables.append(table)
    _name_fixed_settings(tables)
    tables.sort(key=lambda t: (t.data, t.data_source, t.monitor, t.mode, _natural(t.heading)))
    if reference and not any(row.label == reference for table in tables for row in table.rows):
        from recbench.errors import UserInputError

        labels = sorted({row.label for table in tables for row in table.rows})
        raise UserInputError(f"--reference '{reference}': no leaderboard row has that label. Fix: use one of "
                             f"{'; '.join(labels)}")
    return tables


def _name_fixed_settings(tables: list[Table]) -> None:
    """Head each table with what sets it apart from the other tables of its dataset (and metric)."""
    families: dict[tuple[str, str, str, str], list[Table]] = {}
    for table in tables:
        families.setdefault((table.data, table.data_source, table.monitor, table.mode), []).append(table)
    for family in families.values():
        fixed = fixed_settings({t.key: shared_config(t.rows[0].runs[0].record) for t in family})
        for table in family:
            table.fixed = fixed[table.key]


def _natural(text: str) -> list:
    """Sort key reading digit runs as numbers (n_users=400 before n_users=2000)."""
    return [(0, float(part), "") if part[:1].isdigit() else (1, 0.0, part)
            for part in re.findall(r"\d+(?:\.\d+)?|\D+", text)]


def _build_table(data: str, source: str, monitor: str, mode: str, members: list[Run],
                 baselines: Sequence[str] | None, reference: str | None = None) -> Table:
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
        # progressive metrics are columns like the test ones: the same seeds, Stat and paired test
        for split in LEADERBOARD_SPLITS:
            names = {m for run in row.runs for m in _split_metrics(run, split) if m != "epoch"}
            for name in names:
                row.metrics[name] = Stat({int(run.get("seed")): float(_split_metrics(run, split)[name])
                                          for run in row.runs if _finite(_split_metrics(run, split).get(name))})
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
    named = [row for row in rows if reference and row.label == reference]
    if named or candidates:
        pick = min if mode == "min" else max
        table.reference = named[0] if named else pick(candidates, key=lambda row: row.selection.mean)
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
