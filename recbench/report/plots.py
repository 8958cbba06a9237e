"""The leaderboard's plots (matplotlib, imported when first drawn): test metrics as bars, training curves,
the progressive-validation curve over the training stream."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from recbench.report.collect import Run, semantic_config
from recbench.report.render import _arrow, _is_best, column_name
from recbench.report.tables import Row, Table, _finite


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
        ax.set_title(f"{column_name(table, metric)} {_arrow(table, metric)}" + ("  (axis zoomed)" if zoomed else ""),
                     fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    what = "test and progressive" if table.has_progressive else "test"
    fig.suptitle(f"{table.title}: {what} mean ± 95% CI over seeds", fontsize=10)
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


def _loss_groups(table: Table) -> list[tuple[str, list[Row]]]:
    """The rows by the quantity their training loss measures: the task and its heads' settings (A2Gen's
    generated-sequence loss and MMoE's per-action loss are different numbers, not one axis's)."""
    groups: dict[str, list[Row]] = {}
    for row in table.rows:
        heads = {k: v for k, v in semantic_config(row.runs[0].record).items() if k.startswith("task.heads.")}
        groups.setdefault(json.dumps([row.task, heads], sort_keys=True, default=str), []).append(row)
    tasks = [rows[0].task for rows in groups.values()]
    titled = []
    for rows in groups.values():
        title = f"train/loss (epoch mean), task {rows[0].task}"
        if tasks.count(rows[0].task) > 1:  # same task, other head settings: name the models
            title += ": " + ", ".join(sorted({row.model for row in rows}))
        titled.append((title, rows))
    return titled


def _history(table: Table, run: Run) -> dict[int, float]:
    return {int(h["epoch"]): float(h[table.monitor]) for h in run.get("history") or []
            if "epoch" in h and _finite(h.get(table.monitor))}


def plot_curves(table: Table) -> bytes | None:
    """Per epoch: the monitored validation metric (one panel, every row) and, where a CSV log exists, the
    training loss, one panel per loss quantity (_loss_groups); line = mean over seeds, band = min..max."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    losses = {id(run): _train_loss(run) for row in table.rows for run in row.runs}
    panels = [(table.monitor, table.rows, lambda run: _history(table, run))]
    panels += [(title, rows, lambda run: losses[id(run)]) for title, rows in _loss_groups(table)
               if any(losses[id(run)] for row in rows for run in row.runs)]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.4 * cols, 3.8 * nrows), squeeze=False)
    colours = {id(row): f"C{i % 10}" for i, row in enumerate(table.rows)}  # a row keeps its colour in every panel
    drawn = False
    for ax, (name, rows, series) in zip(axes.flat, panels):
        drawn = _draw_curves(ax, rows, series, colours) or drawn
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle(f"{table.title}: training curves (mean over seeds, band = min..max)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # leave room for the suptitle
    return _png(fig, plt)


def _draw_curves(ax, rows: list[Row], series, colours: dict[int, str]) -> bool:
    """One line per row (mean over its seeds per epoch) with a min..max band; False when nothing to draw."""
    drawn = False
    for row in rows:
        curves = [series(run) for run in row.runs]
        epochs = sorted({e for c in curves for e in c})
        if not epochs:
            continue
        values = [[c[e] for c in curves if e in c] for e in epochs]
        colour = colours[id(row)]
        ax.plot(epochs, [np.mean(v) for v in values], marker="o", markersize=3, label=row.label, color=colour)
        if len(curves) > 1:
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.15)
        drawn = True
    return drawn


def _per_day(values: dict[str, list[float]], labels: list[str], reduce) -> list[float]:
    """reduce(seed values) per bucket; NaN where the row has no value, so the line shows a gap, not a guess."""
    return [float(reduce(values[label])) if label in values else math.nan for label in labels]


def plot_progressive(table: Table) -> bytes | None:
    """The progressive-validation curve: per time slice of the training stream (x, e.g. a day) the
    curve metric; line = mean over a row's seeds, band = min..max. None when no run has a curve."""
    metric = table.curve_metric
    labels = table.curve_labels() if metric else []
    if not labels:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.35 * len(labels) + 3.0), 4.2))
    xs = np.arange(len(labels))
    for row in table.rows:
        values = row.curve_values(metric)
        if not values:
            continue
        line, = ax.plot(xs, _per_day(values, labels, np.mean), marker="o", markersize=3, label=row.label)
        if len(row.runs) > 1:
            ax.fill_between(xs, _per_day(values, labels, min), _per_day(values, labels, max),
                            color=line.get_color(), alpha=0.15)
    step = max(1, math.ceil(len(labels) / 20))  # at most ~20 tick labels, so day labels stay legible
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("time slice of the training stream")
    ax.set_title(f"{metric} {_arrow(table, metric)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{table.title}\nprogressive validation on the training stream "
                 "(mean over seeds, band = min..max)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # leave room for the two-line suptitle
    return _png(fig, plt)


def _png(fig, plt) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
