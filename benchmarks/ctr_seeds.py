"""Test AUC of (a)'s matched pair over several seeds: `python benchmarks/ctr_seeds.py [--seeds 1 2 3]`.

One run per side and seed decides (a)'s AUC gap by less than the seed-to-seed spread (FuxiCTR's
DIN moved 0.7145-0.7187 between runs of one seed). This trains recbench (dense Adam, as FuxiCTR)
and FuxiCTR (DeepFM with its LR init fixed) on the same exported rows as
`python -m recbench.bench --only ctr` (recbench/bench/ctr.py), once per seed (the seed sets
initialisation and batch order; the data is the same), and prints each run's test AUC, the mean
per side and the gap of the means. It reuses (a)'s FuxiCTR virtual environment.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from recbench.bench import ctr



def run_seed(seed: int, work: Path, python: Path, threads: int) -> dict[str, dict[str, float]]:
    settings = ctr.CTRSettings(seed=seed)
    _, info, config_dir, expids = ctr.export_dataset(settings, "synthetic", work / "fuxictr", f"_seed{seed}")
    dense = ctr.RECBENCH_VARIANTS["recbench_dense"]
    out = {}
    for model in ("din", "deepfm"):
        rec = ctr.run_recbench(settings, model, "synthetic", work / f"seed{seed}", threads, None, "recbench_dense", dense)
        fux = ctr.run_fuxictr(python, config_dir, expids[model], work / f"seed{seed}", threads, None,
                              info["labels"]["test"], info["groups"]["test"], settings, fix_init=model == "deepfm")
        out[model] = {"recbench": rec["test"]["auc"], "fuxictr": fux["test"]["auc"]}
        print(f"seed {seed} {model}: recbench {out[model]['recbench']:.4f}, FuxiCTR {out[model]['fuxictr']:.4f}",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("experiments/bench/work/seeds"))
    args = parser.parse_args()
    python = ctr.ensure_fuxictr_venv(print)
    runs = {seed: run_seed(seed, args.work, python, args.threads) for seed in args.seeds}
    print(f"\ntest AUC over seeds {args.seeds} (mean, gap = recbench - FuxiCTR)")
    for model in ("din", "deepfm"):
        means = {side: statistics.fmean(runs[s][model][side] for s in args.seeds) for side in ("recbench", "fuxictr")}
        print(f"  {model:7s} recbench {means['recbench']:.4f}  FuxiCTR {means['fuxictr']:.4f}  "
              f"gap {means['recbench'] - means['fuxictr']:+.4f}")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "seeds.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
