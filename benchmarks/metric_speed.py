"""Rows per second per core of recbench's ranking metrics (XAUC, grouped XAUC; AUC, GAUC for context).

    python benchmarks/metric_speed.py                         # 1M and 10M rows, median of 3
    python benchmarks/metric_speed.py --rows 1000000 --repeat 5
    git show HEAD:recbench/metrics.py > /tmp/old_metrics.py
    python benchmarks/metric_speed.py --impl old=/tmp/old_metrics.py --impl new=recbench/metrics.py

One thread: OMP / MKL / OpenBLAS / numexpr are limited to 1 thread before numpy is imported and
torch (if importable) gets torch.set_num_threads(1), so rows/s is per core. Each (metric, rows)
cell is the median of --repeat timed calls on the same arrays, as wall-clock rows/s and as rows
per CPU-second of this process (time.process_time: less sensitive to other processes on the
core). With several --impl the calls are interleaved (impl A, impl B, impl A, ...) so that all
see the same machine load, and their results must agree to 1e-12 (printed as 'same'). The load
average is printed before and after: on a shared machine compare figures from one run only.

Data (seeded): pred = float32 normal logits (a model's output, upcast to float64 by the metric;
--pred-dtype float64 for full-precision random predictions), target = exponential staytime in
seconds rounded to 0.1 s (ties), labels = Bernoulli(0.3), groups = uniform ids with --rows-per-group
rows per group on average (default 10: 1e5 groups at 1M rows).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

try:  # torch is not needed for these metrics, but keep it to one thread if it gets loaded
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

REPO = Path(__file__).resolve().parent.parent
METRICS = ("xauc", "grouped_xauc", "auc", "gauc")


def load_impl(spec: str):
    """'name=path/to/metrics.py' (or just a path) -> (name, module)."""
    name, _, path = spec.rpartition("=")
    path = Path(path)
    name = name or path.stem
    mod_spec = importlib.util.spec_from_file_location(f"_metrics_{name}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return name, module


def make_data(n: int, rows_per_group: int, pred_dtype: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=n).astype(pred_dtype)
    return {
        "pred": pred,
        "target": np.round(rng.exponential(30.0, size=n), 1),
        "labels": (rng.random(n) < 0.3).astype(np.float64),
        "groups": rng.integers(0, max(1, n // rows_per_group), size=n),
    }


def call(module, metric: str, d: dict) -> float:
    if metric == "xauc":
        return module.xauc(d["pred"], d["target"])
    if metric == "grouped_xauc":
        return module.grouped_xauc(d["pred"], d["target"], d["groups"])
    if metric == "auc":
        return module.auc(d["pred"], d["labels"])
    if metric == "gauc":
        return module.gauc(d["pred"], d["labels"], d["groups"])
    raise ValueError(metric)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    ap.add_argument("--impl", action="append", default=None,
                    help="name=path of a metrics module to time (repeatable); default recbench/metrics.py")
    ap.add_argument("--rows-per-group", type=int, default=10)
    ap.add_argument("--pred-dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    impls = [load_impl(s) for s in (args.impl or [f"new={REPO / 'recbench' / 'metrics.py'}"])]
    load_start = os.getloadavg()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, 1 thread, "
          f"cores {os.cpu_count()}, load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print(f"pred {args.pred_dtype}, {args.rows_per_group} rows/group, median of {args.repeat}")
    header = f"{'metric':<14}{'rows':>11}  " + "  ".join(
        f"{name + ' rows/s':>16}{'s':>8}{name + ' rows/cpu-s':>16}" for name, _ in impls)
    print(header + ("  results" if len(impls) > 1 else ""))
    records = []
    for n in args.rows:
        d = make_data(n, args.rows_per_group, args.pred_dtype)
        for metric in args.metrics:
            times = {name: [] for name, _ in impls}
            cpu = {name: [] for name, _ in impls}
            values = {}
            for _ in range(args.repeat):
                for name, module in impls:
                    c0, t0 = time.process_time(), time.perf_counter()
                    values[name] = call(module, metric, d)
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
            row = f"{metric:<14}{n:>11,}  "
            cells = []
            for name, _ in impls:
                med = statistics.median(times[name])
                med_cpu = statistics.median(cpu[name])
                cells.append(f"{n / med:>16,.0f}{med:>8.3f}{n / med_cpu:>16,.0f}")
                records.append({"impl": name, "metric": metric, "rows": n, "median_s": med,
                                "rows_per_s": n / med, "times_s": times[name], "value": values[name],
                                "median_cpu_s": med_cpu, "rows_per_cpu_s": n / med_cpu, "cpu_s": cpu[name],
                                "load_avg_1min": os.getloadavg()[0]})
            row += "  ".join(cells)
            if len(impls) > 1:
                vals = list(values.values())
                agree = all((math.isnan(v) and math.isnan(vals[0])) or abs(v - vals[0]) <= 1e-12 for v in vals)
                row += "  same" if agree else "  DIFFER " + " ".join(f"{v!r}" for v in vals)
            print(row, flush=True)
    load_end = os.getloadavg()
    print(f"load average at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"load_avg_start": load_start, "load_avg_end": load_end,
                                               "pred_dtype": args.pred_dtype, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
