"""Soak test for interruption, resume and damage (not in the default test run):

    python benchmarks/soak.py [--runs 21] [--seed 0] [--out experiments/soak]

Each trial trains a small model (cycling through CONFIGS: every adapter, the paper models among them)
and injects one fault, in turn:

  sigkill          SIGKILL at a random training step or validation (once or twice), then resume=true
  sigterm, sigint  SIGTERM (preemption) / SIGINT (Ctrl+C) at a random step: must exit 143 / 130 with an
                   `interrupted` record and one line, then resume=true
  damaged          SIGKILL, then the checkpoint is damaged (64 zeroed bytes, cut in half, random bytes or
                   another run's checkpoint): resume must refuse with one line and exit 2; then a fresh run
  other_settings   SIGKILL, then resume=true with another seed or learning rate: refused (exit 2); then
                   resume=true with the run's own settings
  full_disk        the run folder on a small tmpfs, nearly full (root and mount needed; otherwise the
                   RECBENCH_NO_SPACE injection at last.ckpt): exit 0, or exit 2 with one line and no temp
                   file left; then with space again, resume=true
  same_second      two runs of different seeds started together, sharing one experiments folder and one
                   fresh dataset cache: each record must hold its own seed's metrics

Every run that finishes is compared with an uninterrupted twin (same configuration and seed): its test
metrics must be identical. Totals: runs started, signals sent, faults injected, mismatches (finished
with other metrics), silent acceptances (a fault that exited 0, or a refusal that was not one line), and
leftovers (temp files of dead writers under --out at the end). Writes <out>/soak.json; exit 1 unless
mismatches, silent acceptances and leftovers are all 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from recbench.records import TEMP_NAME, process_alive  # noqa: E402

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
FAULTS = ("sigkill", "sigterm", "sigint", "damaged", "other_settings", "full_disk", "same_second")


class Soak:
    def __init__(self, out: Path, rng: random.Random) -> None:
        self.out, self.rng = out, rng
        self.twins: dict[tuple[str, int], tuple[dict, int, int]] = {}
        self.totals = {"runs": 0, "signals": 0, "faults": 0, "mismatches": 0, "silent_acceptances": 0}
        self.problems: list[str] = []

    # ------------------------------------------------------------------------------------ running
    def command(self, config: str, seed: int, *extra: str, run_dir: Path | None = None,
                datasets: Path | None = None) -> list[str]:
        where = [f"hydra.run.dir={run_dir}"] if run_dir else []
        return [sys.executable, "-m", "recbench", *CONFIGS[config], *COMMON, f"seed={seed}",
                f"paths.datasets={datasets or self.out / 'datasets'}", *where, *extra]

    def run(self, config: str, seed: int, run_dir: Path, *extra: str, env: dict | None = None,
            kill: str | None = None) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if k not in ("RECBENCH_KILL_AT", "RECBENCH_NO_SPACE")}
        environment.update(env or {}, **({"RECBENCH_KILL_AT": kill} if kill else {}))
        self.totals["runs"] += 1
        self.totals["signals"] += bool(kill)
        return subprocess.run(self.command(config, seed, *extra, run_dir=run_dir), cwd=REPO, capture_output=True,
                              text=True, timeout=1800, env=environment, check=False)

    def twin(self, config: str, seed: int) -> tuple[dict, int, int]:
        if (config, seed) not in self.twins:
            twin_dir = self.out / f"twin_{config}_seed{seed}"
            done = self.run(config, seed, twin_dir)
            assert done.returncode == 0, f"twin {config} seed {seed} failed:\n{done.stderr[-2000:]}"
            import torch

            steps = torch.load(twin_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                               weights_only=False)["global_step"]
            record = json.loads((twin_dir / "results.json").read_text())
            self.twins[config, seed] = (record["metrics"]["test"], int(steps), int(record["epochs_run"]))
        return self.twins[config, seed]

    def random_kill(self, config: str, seed: int, signal: str = "step") -> str:
        """A point in the run: a random training step, or (SIGKILL, 3 in 10) a random epoch's validation."""
        _, steps, epochs = self.twin(config, seed)
        if signal == "step" and self.rng.random() < 0.3:
            return f"valid:{self.rng.randrange(epochs)}"
        return f"{signal}:{self.rng.randrange(1, steps)}"

    # ------------------------------------------------------------------------------------ judging
    def expect(self, ok: bool, silent: bool, what: str) -> bool:
        """Count a fault that was not handled: `silent` when it exited 0 as if nothing happened."""
        if not ok:
            self.totals["silent_acceptances" if silent else "mismatches"] += 1
            self.problems.append(what)
        return ok

    def refused_in_one_line(self, done: subprocess.CompletedProcess, code: int, what: str) -> bool:
        lines = [line for line in done.stderr.splitlines() if line.startswith(("recbench: error:", "recbench: interrupted"))]
        one_line = done.returncode == code and len(lines) == 1 and "Traceback" not in done.stderr
        return self.expect(one_line, done.returncode == 0 or not one_line,
                           f"{what}: exit {done.returncode}, {len(lines)} recbench lines\n{done.stderr[-1500:]}")

    def resume_to_finish(self, config: str, seed: int, run_dir: Path, *extra: str, env: dict | None = None) -> int:
        for attempt in range(1, 10):
            done = self.run(config, seed, run_dir, "resume=true", *extra, env=env)
            if done.returncode == 0:
                return attempt
        raise AssertionError(f"{run_dir}: resume keeps failing:\n{done.stderr[-2000:]}")

    def same_as_twin(self, config: str, seed: int, run_dir: Path) -> bool:
        metrics = json.loads((run_dir / "results.json").read_text())["metrics"]["test"]
        same = metrics == self.twin(config, seed)[0]
        if not same:
            self.totals["mismatches"] += 1
            self.problems.append(f"{run_dir}: test metrics differ from the twin's")
        return same

    # ------------------------------------------------------------------------------------ faults
    def sigkill(self, config: str, seed: int, run_dir: Path) -> str:
        plan = [self.random_kill(config, seed)] + ([self.random_kill(config, seed)] if self.rng.random() < 0.3 else [])
        for kill in plan:  # a second kill lands after the first resume
            self.run(config, seed, run_dir, *(["resume=true"] if run_dir.exists() else []), kill=kill)
        self.resume_to_finish(config, seed, run_dir)
        return ",".join(plan)

    def interrupt(self, config: str, seed: int, run_dir: Path, signal: str, code: int) -> str:
        kill = self.random_kill(config, seed, signal)
        done = self.run(config, seed, run_dir, kill=kill)
        self.totals["faults"] += 1
        if done.returncode != 0:  # a point after the last step never fires: the run just finishes
            self.refused_in_one_line(done, code, f"{run_dir} {kill}")
            status = json.loads((run_dir / "results.json").read_text()).get("status")
            self.expect(status == "interrupted", False, f"{run_dir}: record status {status!r} after {kill}")
            self.resume_to_finish(config, seed, run_dir)
        return kill

    def damaged(self, config: str, seed: int, run_dir: Path) -> str:
        kill = self.random_kill(config, seed)
        self.run(config, seed, run_dir, kill=kill)
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        if not checkpoint.exists():
            return f"{kill} (no checkpoint yet)"
        others = [p for p in self.out.glob("twin_*/checkpoints/last.ckpt") if f"twin_{config}_" not in str(p)]
        damage = self.rng.choice(["zeroed", "truncated", "random"] + (["another run's"] if others else []))
        data = bytearray(checkpoint.read_bytes())
        if damage == "zeroed":
            start = self.rng.randrange(len(data) - 64)
            data[start:start + 64] = bytes(64)
        elif damage == "truncated":
            data = data[: len(data) // 2]
        elif damage == "random":
            data = bytearray(self.rng.randbytes(len(data)))
        else:
            data = bytearray(self.rng.choice(others).read_bytes())
        checkpoint.write_bytes(bytes(data))
        self.totals["faults"] += 1
        self.refused_in_one_line(self.run(config, seed, run_dir, "resume=true"), 2, f"{run_dir}: {damage} checkpoint")
        fresh = self.run(config, seed, run_dir)  # what the message says: drop resume=true
        assert fresh.returncode == 0, fresh.stderr[-2000:]
        return f"{kill}, {damage} checkpoint"

    def other_settings(self, config: str, seed: int, run_dir: Path) -> str:
        kill = self.random_kill(config, seed)
        self.run(config, seed, run_dir, kill=kill)
        if not (run_dir / "checkpoints" / "last.ckpt").exists():
            return f"{kill} (no checkpoint yet)"
        change = self.rng.choice([f"seed={seed + 10}", "optimizer.dense.lr=0.0123"])
        self.totals["faults"] += 1
        extra = [change] if change.startswith("optimizer") else []
        done = self.run(config, seed + 10 if change.startswith("seed") else seed, run_dir, "resume=true", *extra)
        self.refused_in_one_line(done, 2, f"{run_dir}: resume with {change}")
        self.resume_to_finish(config, seed, run_dir)
        return f"{kill}, resume with {change}"

    def full_disk(self, config: str, seed: int, run_dir: Path) -> str:
        mount = self.out / "tmpfs"
        mount.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                                 capture_output=True).returncode == 0
        self.totals["faults"] += 1
        try:
            if mounted:
                tmpfs_dir = mount / run_dir.name
                filler = mount / "filler"
                free = shutil.disk_usage(mount).free
                # leave 0.25-3 MiB: a checkpoint of these models is 1-3 MiB, so the disk fills during the run
                filler.write_bytes(bytes(max(0, free - self.rng.randrange(256, 3072) * 1024)))
                done = self.run(config, seed, tmpfs_dir)
                how = f"tmpfs, {shutil.disk_usage(mount).free >> 10} KiB left at the end"
            else:
                done = self.run(config, seed, run_dir, env={"RECBENCH_NO_SPACE": "last.ckpt"})
                tmpfs_dir, how = run_dir, "RECBENCH_NO_SPACE=last.ckpt"
            if done.returncode != 0:
                self.refused_in_one_line(done, 2, f"{run_dir}: full disk ({how})")
                leftovers = [p for p in tmpfs_dir.rglob(".*") if TEMP_NAME.match(p.name)]
                self.expect(not leftovers, False, f"{run_dir}: temp files left on the full disk: {leftovers}")
            if mounted:
                filler.unlink()
                shutil.copytree(tmpfs_dir, run_dir)  # the run folder moves to a disk with space, as a user would
        finally:
            if mounted:
                subprocess.run(["umount", str(mount)], check=False)
        record = run_dir / "results.json"
        if not record.exists() or json.loads(record.read_text()).get("status") != "finished":
            self.resume_to_finish(config, seed, run_dir)
        return how + (", exit 0" if done.returncode == 0 else f", exit {done.returncode}")

    def same_second(self, config: str, seed: int, run_dir: Path) -> str:
        experiments, datasets = run_dir / "experiments", run_dir / "datasets"  # a fresh cache both build at once
        environment = {k: v for k, v in os.environ.items() if k not in ("RECBENCH_KILL_AT", "RECBENCH_NO_SPACE")}
        commands = [self.command(config, s, f"paths.experiments={experiments}", datasets=datasets) for s in (1, 2)]
        started = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env=environment) for c in commands]
        self.totals["runs"] += 2
        self.totals["faults"] += 1
        for process in started:
            _, err = process.communicate(timeout=1800)
            assert process.returncode == 0, err[-2000:]
        records = [json.loads(p.read_text()) for p in experiments.glob("runs/*/results.json")]
        self.expect(len(records) == 2, False, f"{run_dir}: {len(records)} records for 2 runs")
        for record in records:
            self.same_as_twin(config, record["seed"], Path(record["run_dir"]))
        return "seeds 1 and 2 together"

    # ------------------------------------------------------------------------------------ totals
    def leftovers(self) -> list[Path]:
        """Temp files and folders under --out whose writer is gone (a start would have removed them)."""
        found = []
        for path in self.out.rglob(".*"):
            match = TEMP_NAME.match(path.name)
            if match and not process_alive(int(match["pid"])):
                found.append(path)
        return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="trials (each one fault; they cycle through FAULTS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "soak")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "soak.json").exists() \
            and not any(args.out.glob("twin_*")):
        sys.exit(f"soak: {args.out} holds files that are not a soak's; pass an empty or a soak folder as --out")
    shutil.rmtree(args.out, ignore_errors=True)  # a previous soak's folder
    soak, started, trials = Soak(args.out, random.Random(args.seed)), time.time(), []
    names = list(CONFIGS)
    for trial in range(args.runs):
        fault, config, seed = FAULTS[trial % len(FAULTS)], names[trial % len(names)], 1 + (trial // len(FAULTS)) % 2
        run_dir = args.out / f"trial{trial:02d}_{fault}"
        before = dict(soak.totals)
        if fault in ("sigterm", "sigint"):
            detail = soak.interrupt(config, seed, run_dir, "term" if fault == "sigterm" else "int",
                                    143 if fault == "sigterm" else 130)
        else:
            detail = getattr(soak, fault)(config, seed, run_dir)
        if fault != "same_second":
            soak.same_as_twin(config, seed, run_dir)
        ok = all(soak.totals[k] == before[k] for k in ("mismatches", "silent_acceptances"))
        trials.append({"trial": trial, "fault": fault, "config": config, "seed": seed, "detail": detail, "ok": ok})
        print(f"trial {trial:2d} {fault:15s} {config:24s} seed {seed} {detail:44s} {'ok' if ok else 'PROBLEM'}",
              flush=True)
    leftovers = soak.leftovers()
    summary = {**soak.totals, "leftovers": len(leftovers), "seconds": round(time.time() - started),
               "problems": soak.problems, "leftover_paths": [str(p) for p in leftovers], "trials": trials}
    tmp = args.out / ".soak.json.partial"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, args.out / "soak.json")
    print(" ".join(f"{key} {summary[key]}," for key in ("runs", "signals", "faults", "mismatches",
                                                           "silent_acceptances", "leftovers")), f"{summary['seconds']} s")
    for problem in soak.problems:
        print("PROBLEM:", problem.splitlines()[0])
    return 1 if summary["mismatches"] or summary["silent_acceptances"] or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
