"""Formatting of numbers and the leaderboard's renderings: markdown, self-contained html, csv, json."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbench.report.collect import Run, semantic_config
from recbench.report.statistics import Stat, _num
from recbench.report.tables import Row, Table

OUTPUT_STEM = "leaderboard"
PLOTS_DIR = f"{OUTPUT_STEM}_files"
SIGNIFICANCE = 0.05


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


def fmt_paired(row: Row, table: Table, metric: str | None = None) -> str:
    """Δ of the metric (default: the primary) vs the reference row, with the paired t-test."""
    if row.is_reference:
        return "reference"
    test = row.paired.get(metric or table.primary)
    if test is None or test.n == 0:
        return "no common seeds"
    digits = 4 if abs(test.delta) < 10 else 2
    text = f"{test.delta:+.{digits}f}"
    if test.n < 2:
        return f"{text} (1 seed, no test)"
    return f"{text} ({fmt_p(test.p)}, n={test.n})" + (" *" if test.p < SIGNIFICANCE else "")


def short_metric(metric: str) -> str:
    return metric.removeprefix("test/")


def column_name(table: Table, metric: str) -> str:
    """A metric's column name: test columns drop `test/` unless progressive/... columns stand beside them."""
    return metric if table.has_progressive else short_metric(metric)


PROGRESSIVE_NOTE = (
    "Metric columns: test/… = test (fixed days): the fixed held-out test days, scored by the model selected on "
    "validation. progressive/… = progressive (training stream): each time slice of the training stream scored by "
    "the model trained on everything before it (after a warm-up), an online-style metric over the training "
    "period. Both: mean ± 95% CI over the same seeds, paired t-test vs the same reference row.")


def _arrow(table: Table, metric: str) -> str:
    return "↓" if table.direction(metric) == "min" else "↑"


def _is_best(table: Table, metric: str, stat: Stat | None) -> bool:
    best = table.best(metric)
    return (stat is not None and stat.n > 0 and math.isfinite(best)
            and math.isclose(stat.mean, best, rel_tol=0, abs_tol=1e-12))


def _href(report: "Report", path: Path, folder: bool = False) -> str:
    """A link from the written leaderboard to path, relative to the folder the leaderboard is written to
    (so the page and its runs can be moved together), URL-quoted; a folder link ends with /."""
    base = os.path.abspath(report.out_dir or Path.cwd())
    try:
        relative = Path(os.path.relpath(os.path.abspath(path), base)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return Path(os.path.abspath(path)).as_uri()
    return urllib.parse.quote(relative) + ("/" if folder and relative != "." else "")


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
      " the monitored metric comes from task.monitor_mode), only where two or more models of the table "
      "report the metric.")),
    ("reference",
     ("the baseline row with the best validation value of the monitored metric (mean over seeds); the "
      "test set is never used to choose it. Baselines come from the experiment config's "
      "`benchmark.baselines` or `--baselines`; with none declared every row is a candidate. "
      "`--reference <row label>` names the reference row instead.")),
    ("Δ vs reference",
     ("mean over the seeds both rows of one table have of (row − reference) on the test value of the monitored "
      "metric, with the two-sided paired t-test p-value on those seeds (df = pairs − 1); * marks p < "
      "0.05. No correction for multiple comparisons. Identical values on every seed give p = 1; fewer "
      "than 2 common seeds give no test.")),
    ("rows",
     ("one row per model and config key: the resolved config minus the seed and settings that cannot "
      "change results (paths, logger, progress bar, log interval, evaluation batch size, data "
      "location), plus the dataset fingerprint. Records with different keys are never averaged; rows of"
      " one model are told apart by a suffix naming what differs.")),
    ("tables",
     ("one table per dataset, data source, monitored metric and shared settings: the rows of a table "
      "differ only in the model, the model's own settings (model.*, the task and optimizer it trains "
      "with, its text stage and text inputs) and the seed. Runs with other data settings (e.g. replica "
      "sizes), another dataset fingerprint, epochs (trainer.*), loader, streaming or any other shared "
      "setting are in another table, headed by the settings that set it apart; rows of different tables "
      "are never marked against each other or paired. Synthetic-replica and real data never share a "
      "table.")),
    ("train s, samples/s",
     ("mean over seeds of the wall time of Trainer.fit (validation included) and of the training "
      "throughput (training batches only).")),
]


@dataclass
class Report:
    tables: list[Table]
    runs: list[Run]
    folders: list[Path]
    generated: str
    plots: dict[str, dict[str, str]] = field(default_factory=dict)  # slug -> {"bars": file name, ...}
    plot_note: str = ""
    out_dir: Path | None = None  # where the leaderboard is written: links to runs are relative to it
    tags: list[str] = field(default_factory=list)  # --tags: only runs with any of these config.tags

    @property
    def without_results(self) -> list[Run]:
        return [run for run in self.runs if run.status != "finished"]

    def superseded(self) -> list[Run]:
        return [run for table in self.tables for row in table.rows for run in row.superseded]


def _compared(table: Table) -> list[str]:
    """The metrics with a Δ-vs-reference column: the primary, and its progressive counterpart if any;
    none in a table of one row (nothing in it to compare with)."""
    if len(table.rows) < 2:
        return []
    return [table.primary] + ([table.progressive_primary] if table.progressive_primary else [])


def _table_header(table: Table) -> list[str]:
    ref = table.reference.label if table.reference else "reference"
    return (["model", "role", "task", "seeds"]
            + [f"{column_name(table, m)} {_arrow(table, m)}" for m in table.headline_metrics()]
            + [f"Δ {column_name(table, m)} vs {ref}" for m in _compared(table)]
            + ["train s", "samples/s", "parameters"])


def _table_cells(table: Table, row: Row) -> list[tuple[str, bool]]:
    """(text, is_best) per column."""
    cells = [(row.label, False), (row.role or "–", False), (row.task, False), (str(len(row.runs)), False)]
    for metric in table.headline_metrics():
        stat = row.metrics.get(metric)
        cells.append((fmt_stat(stat), _is_best(table, metric, stat)))
    params = row.mean_of("parameters")
    cells += [(fmt_paired(row, table, m), False) for m in _compared(table)]
    cells += [(fmt(row.mean_of("train_seconds"), 1), False),
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
    if table.has_progressive:
        lines.append(PROGRESSIVE_NOTE)
    return lines


def _curve_title(metric: str) -> str:
    return (f"Progressive validation over the training stream: {metric} per time slice, mean over seeds "
            "(– = no value, e.g. no positive in the slice).")


def _curve_md(table: Table) -> list[str]:
    """The progressive curve as a table (rows = leaderboard rows, columns = time slices): readable
    without the plot."""
    curve = table.progressive_curve()
    if curve is None:
        return []
    metric, labels, means = curve
    out = [_curve_title(metric), "", "| model | " + " | ".join(_md_escape(label) for label in labels) + " |",
           "|---|" + "---:|" * len(labels)]
    out += ["| " + " | ".join([_md_escape(row.label)] + [fmt(v) for v in values]) + " |"
            for row, values in zip(table.rows, means)]
    return out + [""]


def _which_metrics(report: Report) -> str:
    if any(table.has_progressive for table in report.tables):
        return "Test metrics (and progressive validation on the training stream where runs have it)"
    return "Test metrics"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_link(text: str, href: str) -> str:
    return "[" + _md_escape(text).replace("[", "\\[").replace("]", "\\]") + f"]({href})"


def _tags_note(report: Report) -> str:
    return f" with any of the tags {', '.join(report.tags)}" if report.tags else ""


def _runs_md(report: Report, table: Table) -> list[str]:
    """The counted runs of the table, per row: each seed's run folder and record as relative links."""
    out = ["Runs (folder · record):", ""]
    for row in table.rows:
        links = [f"seed {run.get('seed')} {_md_link(run.run_dir.name, _href(report, run.run_dir, folder=True))}"
                 f" · {_md_link(run.path.name, _href(report, run.path))}" for run in row.runs]
        out.append(f"- {_md_escape(row.label)}: " + ", ".join(links))
    return out + [""]


def render_markdown(report: Report) -> str:
    out = ["# recbench leaderboard", "",
           f"Generated {report.generated} by `python -m recbench.report` from "
           f"{sum(r.status == 'finished' for r in report.runs)} finished records under "
           + ", ".join(f"`{_rel(f)}`" for f in report.folders) + _tags_note(report)
           + f". {_which_metrics(report)}; mean ± 95% CI over seeds (definitions at the end).", ""]
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
        out += _curve_md(table)
        for kind, title in (("bars", "test metrics"), ("curves", "training curves"),
                            ("progressive", "progressive validation over time")):
            name = report.plots.get(table.slug, {}).get(kind)
            if name:
                out += [f"![{table.title}: {title}]({PLOTS_DIR}/{name})", ""]
        out += _runs_md(report, table)
    if report.plot_note:
        out += [f"Plots: {report.plot_note}", ""]
    if report.without_results:
        out += ["## Runs without results", "", "| run | model | data | seed | status | error |",
                "|---|---|---|---:|---|---|"]
        for run in report.without_results:
            out.append("| " + " | ".join([_md_link(_rel(run.run_dir), _href(report, run.run_dir, folder=True))] + [
                _md_escape(str(v)) for v in (run.get("model", "?"), run.get("data", "?"), run.get("seed", "?"),
                                            run.status, run.error or "–")]) + " |")
        out.append("")
    superseded = report.superseded()
    if superseded:
        out += ["## Superseded records (same config and seed as a newer record; not counted)", ""]
        out += [f"- {_md_link(_rel(run.path), _href(report, run.path))}" for run in superseded] + [""]
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


# Compact tables: headers wrap (at spaces and after "/"), the ± CI and the p-value go on a second line
# of their cell, role, task and seeds under the model name, so a table of about ten columns fits a 1280 px
# window without a horizontal scrollbar; .scroll stays as the fallback for a very wide one.
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1400px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .45em;text-align:right;vertical-align:top}
th{background:#f3f3f3;font-weight:600;white-space:normal;min-width:4em}
td{white-space:nowrap}
td.text,th.text{text-align:left}
td.model{white-space:normal;overflow-wrap:anywhere;min-width:12em}
td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:8em}
.sub{display:block;font-size:.82em;color:#555}
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
# Value columns per html table beside the model column (metrics, Δ, time, size; days of the progressive
# curve): a wider table continues in a second table below, the model column repeated, instead of running
# off the screen.
HTML_COLUMNS = 10


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
           + ", ".join(f"<code>{_h(_rel(f))}</code>" for f in report.folders) + _h(_tags_note(report))
           + f". {_which_metrics(report)}; mean ± 95% CI over seeds (definitions below).</p>"]
    if not report.tables:
        out.append("<p>No finished runs.</p>")
    for table in report.tables:
        out.append(f'<h2 id="{_h(table.slug)}">{_h(table.title)}</h2>')
        for line in _caption_lines(table):
            cls = "note warn" if line.startswith("Data source") else "note"
            out.append(f'<p class="{cls}">{_h(line)}</p>')
        out += _html_leaderboard(table)
        out += _curve_html(table)
        for kind, alt in (("bars", "test metrics, mean ± 95% CI"), ("curves", "training curves"),
                          ("progressive", "progressive validation over time")):
            name = report.plots.get(table.slug, {}).get(kind)
            if name and name in images:
                data = base64.b64encode(images[name]).decode()
                out.append(f'<img alt="{_h(table.title)}: {_h(alt)}" src="data:image/png;base64,{data}">')
        out.append(_html_all_metrics(table))
        out.append(_html_runs(report, table))
    if report.plot_note:
        out.append(f'<p class="note warn">Plots: {_h(report.plot_note)}</p>')
    if report.without_results:
        out.append("<h2>Runs without results</h2><table><thead><tr>" + "".join(
            f'<th class="text">{h}</th>' for h in ("run", "model", "data", "seed", "status", "error"))
            + "</tr></thead><tbody>")
        for run in report.without_results:
            link = _a(_href(report, run.run_dir, folder=True), _rel(run.run_dir))
            values = (run.get("model", "?"), run.get("data", "?"), run.get("seed", "?"), run.status, run.error or "–")
            out.append(f'<tr><td class="text wrap">{link}</td>'
                       + "".join(f'<td class="text wrap">{_h(v)}</td>' for v in values) + "</tr>")
        out.append("</tbody></table>")
    superseded = report.superseded()
    if superseded:
        out.append("<h2>Superseded records</h2>"
                   "<p class='note'>Same config and seed as a newer record; not counted.</p><ul>"
                   + "".join(f"<li>{_a(_href(report, run.path), _rel(run.path))}</li>" for run in superseded)
                   + "</ul>")
    out.append("<footer><h2>Definitions</h2><dl>" + "".join(
        f"<dt>{_h(name)}</dt><dd>{_h(text)}</dd>" for name, text in DEFINITIONS) + "</dl>")
    definitions = _metric_definitions(report)
    if definitions:
        out.append("<h3>Metrics (as recorded by the runs)</h3><dl>" + "".join(
            f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in definitions.items()) + "</dl>")
    out.append("</footer></body></html>")
    return "\n".join(out)


def _th(text: str, cls: str = "") -> str:
    """A header cell that may wrap after each / and _ of a metric name as well as at spaces."""
    return f'<th class="{cls}">' + _h(text).replace("/", "/<wbr>").replace("_", "_<wbr>") + "</th>"


def _blocks(columns: list[str], taken: int = 0) -> list[list[str]]:
    """The columns in as few html tables of HTML_COLUMNS as needed, the first with `taken` columns already
    used (Δ, time, size); the rest evenly filled."""
    first = max(1, HTML_COLUMNS - taken)
    head, rest = columns[:first], columns[first:]
    size = math.ceil(len(rest) / math.ceil(len(rest) / HTML_COLUMNS)) if rest else 1
    return [head] + [rest[i:i + size] for i in range(0, len(rest), size)]


def _two_lines(text: str) -> str:
    """A number with its detail (`0.7200 ± 0.0497`, `+0.0433 (p=0.069, n=3) *`) as two lines of one cell."""
    head, _, rest = text.partition(" ")
    if not rest or not head[:1].isdigit() and head[:1] not in "+-–":
        return _h(text)
    return f'{_h(head)} <span class="sub">{_h(rest)}</span>'


def _model_cell(row: Row) -> str:
    details = " · ".join(part for part in (row.role, row.task, f"{len(row.runs)} seeds") if part)
    return f'<td class="text model">{_h(row.label)}<span class="sub">{_h(details)}</span></td>'


def _html_leaderboard(table: Table) -> list[str]:
    """The table as html: the model, the headline metrics, Δ vs the reference, time and size; metrics
    beyond HTML_COLUMNS continue in further tables."""
    metrics = table.headline_metrics()
    blocks = _blocks(metrics, taken=len(_compared(table)) + 3)
    ref = table.reference.label if table.reference else "reference"
    out = []
    for number, block in enumerate(blocks):
        first = number == 0
        header = [_th("model", "text")] + [_th(f"{column_name(table, m)} {_arrow(table, m)}") for m in block]
        if first:
            header += [_th(f"Δ {column_name(table, m)} vs {ref}") for m in _compared(table)]
            header += [_th("train s"), _th("samples/s"), _th("parameters")]
        if not first:
            out.append(f"<p class='note'>{_h(table.heading)}, continued: more metrics.</p>")
        out.append('<div class="scroll"><table><thead><tr>' + "".join(header) + "</tr></thead><tbody>")
        for row in table.rows:
            cells = [_model_cell(row)]
            for metric in block:
                stat = row.metrics.get(metric)
                cells.append(f'<td class="{"best" if _is_best(table, metric, stat) else ""}">'
                             f"{_two_lines(fmt_stat(stat))}</td>")
            if first:
                cells += [f"<td>{_two_lines(fmt_paired(row, table, m))}</td>" for m in _compared(table)]
                params = row.mean_of("parameters")
                cells += [f"<td>{_h(text)}</td>" for text in (
                    fmt(row.mean_of("train_seconds"), 1), fmt(row.mean_of("train_samples_per_second"), 0),
                    f"{params:,.0f}" if math.isfinite(params) else "–")]
            out.append(f'<tr class="{"reference" if row.is_reference else ""}">' + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
    return out


def _curve_html(table: Table) -> list[str]:
    curve = table.progressive_curve()
    if curve is None:
        return []
    metric, labels, means = curve
    out = [f"<p class='note'>{_h(_curve_title(metric))}</p>"]
    start = 0
    for block in _blocks(labels):
        out.append("<div class='scroll'><table><thead><tr><th class='text'>model</th>"
                   + "".join(f"<th>{_h(label)}</th>" for label in block) + "</tr></thead><tbody>")
        out += [f"<tr><td class='text model'>{_h(row.label)}</td>" + "".join(
            f"<td>{_h(fmt(v))}</td>" for v in values[start:start + len(block)]) + "</tr>"
            for row, values in zip(table.rows, means)]
        out.append("</tbody></table></div>")
        start += len(block)
    return ["".join(out)]


def _html_all_metrics(table: Table) -> str:
    metrics = table.all_metrics()
    title = "All test and progressive metrics" if table.has_progressive else "All test metrics"
    out = [f"<details><summary>{title}</summary>"]
    for block in _blocks(metrics):
        out.append("<div class='scroll'><table><thead><tr>" + _th("model", "text")
                   + "".join(_th(f"{column_name(table, m)} {_arrow(table, m)}") for m in block)
                   + "</tr></thead><tbody>")
        for row in table.rows:
            out.append(f"<tr><td class='text model'>{_h(row.label)}</td>" + "".join(
                f"<td class='{'best' if _is_best(table, m, row.metrics.get(m)) else ''}'>"
                f"{_two_lines(fmt_stat(row.metrics.get(m)))}</td>" for m in block) + "</tr>")
        out.append("</tbody></table></div>")
    out.append("</details>")
    return "".join(out)


def _a(href: str, text: str) -> str:
    return f'<a href="{_h(href)}">{_h(text)}</a>'


def _html_runs(report: Report, table: Table) -> str:
    """The counted runs: each one's folder and record as links relative to the leaderboard."""
    out = [f"<details><summary>Runs ({sum(len(row.runs) for row in table.rows)})</summary><div class='scroll'>"
           "<table><thead><tr>" + "".join(_th(h, "text") for h in (
               "model", "seed", "run folder", "record", f"valid {table.monitor}", short_metric(table.primary),
               "train s", "config key", "git commit")) + "</tr></thead><tbody>"]
    for row in table.rows:
        for run in row.runs:
            metrics = run.get("metrics") or {}
            folder = _href(report, run.run_dir, folder=True)
            out.append("<tr>" + "".join((
                f"<td class='text model'>{_h(row.label)}</td>", f"<td class='text'>{_h(run.get('seed'))}</td>",
                f"<td class='text wrap'>{_a(folder, folder)}</td>",
                f"<td class='text'>{_a(_href(report, run.path), run.path.name)}</td>",
                f"<td>{_h(fmt(metrics.get('valid', {}).get(table.monitor, math.nan)))}</td>",
                f"<td>{_h(fmt(metrics.get('test', {}).get(table.primary, math.nan)))}</td>",
                f"<td>{_h(fmt(run.get('train_seconds', math.nan), 1))}</td>",
                f"<td class='text'>{_h(row.key)}</td>",
                f"<td class='text'>{_h((run.get('git_commit') or '–')[:10])}</td>")) + "</tr>")
    out.append("</tbody></table></div></details>")
    return "".join(out)


CSV_COLUMNS = ["status", "data", "data_source", "monitor", "table", "model", "label", "config_key", "role", "task",
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
                    "monitor": table.monitor, "table": table.heading, "model": row.model, "label": row.label,
                    "config_key": row.key, "role": row.role, "task": row.task,
                    "reference": table.reference.label if table.reference else "",
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


def _curve_json(table: Table) -> dict[str, Any]:
    """{"progressive_curve": metric, bucket labels, per row the means} where the runs have a curve, else {}
    (so records without one give the same json as before)."""
    curve = table.progressive_curve()
    if curve is None:
        return {}
    metric, labels, means = curve
    return {"progressive_curve": {"metric": metric, "labels": labels, "rows": [
        {"label": row.label, "means": [_num(v) for v in values]} for row, values in zip(table.rows, means)]}}


def render_json(report: Report) -> dict[str, Any]:
    tables = []
    for table in report.tables:
        tables.append({
            "data": table.data, "data_source": table.data_source, "monitor": table.monitor, "mode": table.mode,
            "heading": table.heading, "table_key": table.key, "fixed": table.fixed,
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
                "config": semantic_config(row.runs[0].record)} for row in table.rows], **_curve_json(table)})
    return {"generated": report.generated, "folders": [str(f) for f in report.folders], "tags": report.tags,
            "definitions": dict(DEFINITIONS),
            "metric_definitions": _metric_definitions(report), "tables": tables,
            "runs_without_results": [{"run": _rel(run.run_dir), "status": run.status, "model": run.get("model"),
                                      "data": run.get("data"), "seed": run.get("seed"), "error": run.error}
                                     for run in report.without_results]}
