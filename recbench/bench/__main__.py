"""`python -m recbench.bench [--quick] [--only ctr|preprocess|models|gpu|grid]`: the performance benchmark.

Sections (each a module of this package; benchmarks/README.md explains the method):
  ctr         (a) recbench vs FuxiCTR, DIN and DeepFM on the same Tmall CTR samples
  preprocess  (b) the Tmall adapter on a full-size (54.9M-row) log: build and reload, time and memory
  models      (c) each paper model's training samples/s and peak memory on its default dataset
  gpu         (d) id-table lookup bytes/s against each device's memory bandwidth (CPU and every CUDA
              device); on CUDA also the training samples/s of (a)'s and (c)'s recbench models
  grid        (e) recbench vs FuxiCTR over history length x embedding rows on generated data, repeated
              and interleaved (hours: not part of the default run; `--only grid`, resumable)
Prints one table per section and writes all figures to experiments/bench/bench.json (atomically;
the grid also to its own resumable grid.json). Every measured job runs in a fresh process; peak
memory is the summed PSS of its process tree (shared pages counted once; RSS is recorded too).
`--quick` uses tiny sizes and skips FuxiCTR (what the smoke test runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from recbench.bench.common import REPO, JobFailed

SECTIONS = ("ctr", "preprocess", "models", "gpu", "grid")
DEFAULT_SECTIONS = ("ctr", "preprocess", "models", "gpu")  # the grid runs for hours: only when asked for


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recbench.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no FuxiCTR (smoke test)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "bench" / "bench.json",
                        help="json with every figure (default: experiments/bench/bench.json)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder: exported data, logs, run dirs (default: next to --out)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch threads on both sides of the comparison (default: 2)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="pin every measured process to the first N cores (default: no pinning; "
                             "the preprocessing section always uses 2)")
    parser.add_argument("--no-fuxictr", action="store_true", help="recbench side of (a) and (e) only")
    parser.add_argument("--ctr-source", choices=("synthetic", "raw", "both"), default=None,
                        help="(a) on the replica, the real files or both (default: both when "
                             "datasets/tmall/raw holds the real log, else synthetic)")
    grid = parser.add_argument_group("grid (e)")
    grid.add_argument("--points", action="append", default=None, metavar="HxE[,HxE...]",
                      help="history length x embedding rows, e.g. 20x50k,100x10m (repeatable; default: "
                           "{20,50,100} x {50k,1m,10m})")
    grid.add_argument("--repeats", type=int, default=None, help="runs per side and point, interleaved (default 3)")
    grid.add_argument("--rows", default=None, help="training rows per point, e.g. 1m (default 1,000,000)")
    grid.add_argument("--eval-rows", default=None, help="validation rows, and as many test rows (default 50k)")
    grid.add_argument("--epochs", type=int, default=None, help="epochs per run (default 1)")
    grid.add_argument("--grid-models", default=None, help="models, comma-separated: din, deepfm (default din)")
    grid.add_argument("--sides", default=None,
                      help="comma-separated: recbench, recbench_dense, fuxictr_w1, fuxictr_w3 "
                           "(default recbench,fuxictr_w1,fuxictr_w3)")
    grid.add_argument("--malloc", choices=("kept", "default"), default=None,
                      help="glibc malloc settings of BOTH sides: kept (recbench's keep_freed_memory values, "
                           "default) or default (glibc's own)")
    grid.add_argument("--grid-json", type=Path, default=None,
                      help="the grid's resumable json (default: grid.json next to --out)")
    return parser.parse_args(argv)


def grid_settings(args: argparse.Namespace):
    """GridSettings from the command line (--quick: tiny sizes, one run, recbench only)."""
    import dataclasses

    from recbench.bench.grid import GridSettings, parse_count

    base = GridSettings.quick() if args.quick else GridSettings()
    changes: dict = {}
    if args.repeats is not None:
        changes["repeats"] = args.repeats
    if args.rows is not None:
        changes["train_rows"] = parse_count(args.rows)
    if args.eval_rows is not None:
        changes["eval_rows"] = parse_count(args.eval_rows)
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.grid_models:
        changes["models"] = tuple(m.strip() for m in args.grid_models.split(",") if m.strip())
    if args.sides:
        changes["sides"] = tuple(s.strip() for s in args.sides.split(",") if s.strip())
    if args.malloc:
        changes["malloc"] = args.malloc
    return dataclasses.replace(base, **changes)


def environment() -> dict:
    from recbench.records import package_versions

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(), "versions": package_versions()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from recbench.bench import ctr, gpu, grid, models, preprocess
    from recbench.records import write_json_atomic

    sections = args.only or list(DEFAULT_SECTIONS)
    if "grid" in sections:  # a mistyped grid option fails now, not after the other sections
        try:
            grid.parse_points(args.points)
            grid.check_settings(grid_settings(args))
        except ValueError as error:
            print(f"python -m recbench.bench: {error}", file=sys.stderr)
            return 2
    args.out = args.out.resolve()
    work = (args.work or args.out.parent / ("work-quick" if args.quick else "work")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    figures: dict = {"quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "environment": environment(), "sections": sections}
    tables, failed = [], []
    for section in sections:
        started = time.perf_counter()
        try:
            if section == "ctr":
                settings = ctr.CTRSettings.quick() if args.quick else ctr.CTRSettings()
                real = (REPO / "datasets" / "tmall" / "raw" / "user_log_format1.csv").is_file()
                choice = args.ctr_source or ("both" if real and not args.quick else "synthetic")
                sources = ("synthetic", "raw") if choice == "both" else (choice,)
                result = ctr.run(settings, work / "ctr", args.threads, not (args.quick or args.no_fuxictr), log,
                                 cpus=args.cpus, sources=sources)
                tables.append(ctr.report(result))
            elif section == "preprocess":
                result = preprocess.run(work / "preprocess", args.quick, log, cpus=args.cpus or 2,
                                        threads=args.threads)
                tables.append(preprocess.report(result))
            elif section == "grid":
                settings = grid_settings(args)
                points = grid.parse_points(args.points) if (args.points or not args.quick) else [grid.Point(20, 5_000)]
                grid_json = (args.grid_json or args.out.parent / ("grid-quick.json" if args.quick else "grid.json")).resolve()
                result = grid.run(settings, points, work / "grid", grid_json, args.threads,
                                  not (args.quick or args.no_fuxictr), log, cpus=args.cpus,
                                  environment=figures["environment"])
                tables.append(grid.report(result))
                result = {"json": str(grid_json), **result}
            elif section == "models":
                result = models.run(work / "models", args.quick, log, args.threads, cpus=args.cpus)
                tables.append(models.report(result))
            else:
                result = gpu.run(work / "gpu", args.quick, log, args.threads)
                tables.append(gpu.report(result))
        except JobFailed as error:
            result = {"status": "failed", "error": str(error)}
            failed.append(section)
            log(f"bench {section}: FAILED: {error}")
        result["section_seconds"] = time.perf_counter() - started
        figures[section] = result
        write_json_atomic(args.out, figures)  # partial results survive a later failure
    figures["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json_atomic(args.out, figures)
    print("\n\n".join(tables))
    print(f"\nfigures: {args.out}" + (f"  (FAILED: {', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
