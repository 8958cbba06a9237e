"""Soak test for resume (not in the default test run): `python benchmarks/soak.py [--runs 20] [--seed 0]`.

Each trial trains a small model (cycling through the configurations in CONFIGS: every adapter,
the paper models among them) with a random SIGKILL injected (a random training step or the
validation of a random epoch, via RECBENCH_KILL_AT), then re-runs the same command with
`resume=true` (again with a possible kill) until the run finishes, and compares its test metrics
with an uninterrupted twin of the same configuration and seed. Prints one line per trial and a
summary, writes experiments/soak/soak.json; exit 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMON = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "loader.batch_size=256",
          "checkpoint.every_n_steps=3", "early_stopping.patience=5", "logger=none"]
# one small run per adapter, paper models included (A2Gen, Moment&Cross, LLM-Alignment with its
# k-means codes refreshed during the fit); trials cycle through them
CONFIGS = {
    "mmoe_tmall": ["model=mmoe", "data=tmall", "data.replica.n_users=150", "data.replica.n_items=1500",
                   "data.replica.episodes_per_user=15"],
    "a2gen_tmall": ["model=a2gen", "data=tmall", "data.replica.n_users=150", "data.replica.n_items=1500",
                    "data.replica.episodes_per_user=15"],
    "moment_cross_kuailive": ["model=moment_cross", "data=kuailive", "data.replica.n_users=100",
                              "data.replica.n_streamers=80", "data.replica.n_authors=120",
                              "data.replica.live_exposures_per_user=25"],
    "llm_alignment_kuailive": ["model=llm_alignment", "data=kuailive", "data.replica.n_users=100",
                               "data.replica.n_streamers=80", "data.replica.n_authors=120",
                               "data.replica.live_exposures_per_user=25", "model.net.refresh_steps=4"],
    "dcn_kuaicomt": ["model=dcn", "data=kuaicomt", "data.replica.n_users=300", "data.replica.n_videos=200"],
}


def run(out: Path, run_dir: Path, config: str, seed: int, kill: str | None, resume: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != "RECBENCH_KILL_AT"}
    if kill:
        env["RECBENCH_KILL_AT"] = kill
    command = [sys.executable, "-m", "recbench", *CONFIGS[config], *COMMON, f"seed={seed}",
               f"paths.datasets={out / 'datasets'}", f"hydra.run.dir={run_dir}", *(["resume=true"] if resume else [])]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, env=env,
                          check=False).returncode


def run_shape(run_dir: Path) -> tuple[int, int]:
    """(global steps, epochs) of a finished run, read from its last checkpoint and record."""
    import torch

    steps = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    return int(steps), int(json.loads((run_dir / "results.json").read_text())["epochs_run"])


def random_kill(rng: random.Random, steps: int, epochs: int) -> str:
    """A SIGKILL at a random training step, or (3 in 10) during the validation of a random epoch."""
    if rng.random() < 0.3:
        return f"valid:{rng.randrange(epochs)}"
    return f"step:{rng.randrange(1, steps)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "soak")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    twins: dict[str, tuple[dict, int, int]] = {}
    trials, kills, mismatches, started = [], 0, 0, time.time()
    names = list(CONFIGS)
    for trial in range(args.runs):
        config, seed = names[trial % len(names)], 1 + (trial // len(names)) % 2
        if (config, seed) not in twins:
            twin_dir = args.out / f"twin_{config}_seed{seed}"
            assert run(args.out, twin_dir, config, seed, None, False) == 0, f"twin {config} seed {seed} failed"
            twins[config, seed] = (json.loads((twin_dir / "results.json").read_text())["metrics"]["test"],
                                   *run_shape(twin_dir))
        reference, steps, epochs = twins[config, seed]
        run_dir, attempts, plan = args.out / f"trial{trial:02d}", 0, [random_kill(rng, steps, epochs)]
        if rng.random() < 0.3:
            plan.append(random_kill(rng, steps, epochs))  # a second kill after the first resume
        while True:
            kill = plan[attempts] if attempts < len(plan) else None
            code = run(args.out, run_dir, config, seed, kill, resume=attempts > 0)
            attempts += 1
            kills += code == -9
            if code == 0:
                break
            assert code == -9 and attempts < 10, f"trial {trial}: exit {code}"
        metrics = json.loads((run_dir / "results.json").read_text())["metrics"]["test"]
        same = metrics == reference
        mismatches += not same
        trials.append({"trial": trial, "config": config, "seed": seed, "kills": plan, "attempts": attempts,
                       "identical": same})
        print(f"trial {trial:2d} {config:22s} seed {seed} kills {','.join(plan):18s} attempts {attempts} "
              f"{'identical' if same else 'MISMATCH'}", flush=True)
    summary = {"runs": args.runs, "kills": kills, "mismatches": mismatches, "seconds": round(time.time() - started),
               "trials": trials}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / ".soak.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, args.out / "soak.json")
    print(f"runs {args.runs}, kills {kills}, mismatches {mismatches}, {summary['seconds']} s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
