"""`python -m recbench.report`: arguments, building the report and writing its files."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from recbench.errors import UserInputError
from recbench.records import json_safe, write_atomic
from recbench.report.collect import find_runs, run_tags, with_tags
from recbench.report.plots import _plt, plot_bars, plot_curves, plot_progressive
from recbench.report.render import (OUTPUT_STEM, PLOTS_DIR, Report, _rel, render_csv, render_html, render_json,
                                    render_markdown)
from recbench.report.tables import build_tables

FORMATS = ("md", "html", "csv", "json")


def make_report(folders: Sequence[Path], baselines: Sequence[str] | None = None,
                reference: str | None = None, tags: Sequence[str] | None = None) -> Report:
    runs = find_runs(folders)
    shown = ", ".join(str(f) for f in folders)
    if not runs:
        raise UserInputError(f"{shown}: no results.json and no run folder found below it. Fix: run "
                             "`python -m recbench ...` (or `-m` for a sweep) first, or pass the folder that "
                             "holds the runs (default experiments/)")
    if tags:
        tagged = with_tags(runs, tags)
        if not tagged:
            found = sorted({tag for run in runs for tag in run_tags(run)})
            raise UserInputError(f"--tags {','.join(tags)}: no run below {shown} has any of these tags (tags "
                                 f"found: {', '.join(found) or 'none'}). Fix: use one of the tags found, or tag "
                                 "runs with `python -m recbench ... 'tags=[name]'`")
        runs = tagged
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Report(build_tables(runs, baselines, reference), runs, list(folders), generated, tags=list(tags or []))


def write_report(report: Report, out_dir: Path, formats: Sequence[str], plots: bool = True) -> list[Path]:
    report.out_dir = out_dir  # the pages link the runs relative to where they are written
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
                for kind, draw in (("bars", plot_bars), ("curves", plot_curves), ("progressive", plot_progressive)):
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
                 "json": lambda: json.dumps(json_safe(render_json(report)), indent=1, sort_keys=False, allow_nan=False) + "\n"}
    for fmt_name in formats:
        path = out_dir / f"{OUTPUT_STEM}.{fmt_name}"
        write_atomic(path, renderers[fmt_name]())
        written.append(path)
    return written


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recbench.report",
        description="Leaderboard from the results.json records below the given folders, one table per dataset "
                    "and shared settings: mean ± 95%% CI over seeds, paired t-test against the table's best "
                    "baseline, plots.")
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("experiments")],
                        help="folders to search for results.json (default: experiments)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the first folder given)")
    parser.add_argument("--format", default="md,html",
                        help="comma-separated: md, html, csv, json (default: md,html)")
    parser.add_argument("--baselines", default=None,
                        help="comma-separated baseline models (default: the experiment configs' benchmark.baselines)")
    parser.add_argument("--reference", default=None,
                        help='the row every other row of its table is compared with, by its label, e.g. '
                             '"llm_alignment" or "mmoe (embedding_dim=32)" (default: the best baseline on validation)')
    parser.add_argument("--tags", default=None,
                        help="comma-separated: only runs whose config.tags holds any of them (runs are tagged "
                             "with `python -m recbench ... 'tags=[a,b]'`)")
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
        tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
        report = make_report(args.folders, baselines, args.reference, tags)
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
