"""Resume after SIGKILL: same command + resume=true ends with the same test metrics, bit for bit."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY = ["model=mmoe", "data=tmall", "data.replica.n_users=150", "data.replica.n_items=1500",
        "data.replica.episodes_per_user=15", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "loader.batch_size=256", "checkpoint.every_n_steps=3", "early_stopping.patience=5", "logger=none",
        "model.net.dropout=0.2"]  # dropout draws from the global RNG: its state must resume exactly too


def run(tmp_path, run_dir, *extra, kill=None):
    env = {**os.environ, **({"RECBENCH_KILL_AT": kill} if kill else {})}
    env.pop("RECBENCH_KILL_AT", None) if kill is None else None
    command = [sys.executable, "-m", "recbench", *TINY, f"paths.datasets={tmp_path / 'datasets'}",
               f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    done = run(tmp, tmp / "twin")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, json.loads((tmp / "twin" / "results.json").read_text())


@pytest.mark.parametrize("kill", ["step:8", "valid:0", "term:8", "int:8"])
def test_killed_run_resumes_to_the_same_metrics(uninterrupted, kill):
    tmp, twin = uninterrupted
    run_dir = tmp / kill.replace(":", "_")
    killed = run(tmp, run_dir, kill=kill)
    if kill.startswith(("term", "int")):  # SIGTERM (preemption) / Ctrl+C: an interrupted record, never a silent 0
        signal_name, code = ("SIGTERM", 143) if kill.startswith("term") else ("SIGINT", 130)
        assert killed.returncode == code, killed.stderr[-3000:]
        assert f"recbench: interrupted by {signal_name}; {run_dir / 'checkpoints' / 'last.ckpt'} holds" in killed.stderr
        assert "resume=true" in killed.stderr and "Traceback" not in killed.stderr
        assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    else:
        assert killed.returncode == -9  # SIGKILL
        assert not (run_dir / "results.json").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    resumed = run(tmp, run_dir, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    record = json.loads((run_dir / "results.json").read_text())
    assert record["metrics"]["test"] == twin["metrics"]["test"]
    assert [h["epoch"] for h in record["history"]] == [h["epoch"] for h in twin["history"]]
    again = run(tmp, run_dir, "resume=true")  # a finished run is not trained again
    assert again.returncode == 0 and "already finished" in again.stderr


def test_rerun_repeats_a_recorded_run_exactly(uninterrupted):
    tmp, twin = uninterrupted
    into = tmp / "twin_again"
    done = subprocess.run([sys.executable, "-m", "recbench.rerun", str(tmp / "twin"), "--into", str(into)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "identical test metrics" in done.stdout
    assert json.loads((into / "results.json").read_text())["metrics"]["test"] == twin["metrics"]["test"]


def test_resume_refuses_other_settings_and_a_damaged_checkpoint(uninterrupted):
    tmp, _ = uninterrupted
    run_dir = tmp / "guarded"
    killed = run(tmp, run_dir, kill="step:8")
    assert killed.returncode == -9 and (run_dir / "checkpoints" / "last.ckpt.sha256").exists()
    other = run(tmp, run_dir, "resume=true", "seed=2")
    assert other.returncode == 2 and "was made with other settings (seed: 1 -> 2)" in other.stderr
    assert "seed: 1" in (run_dir / "config.yaml").read_text()  # refused before it wrote into the run's folder
    last = run_dir / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # 64 zeroed bytes: still loads, silently wrong
    last.write_bytes(bytes(data))
    damaged = run(tmp, run_dir, "resume=true")
    assert damaged.returncode == 2 and "does not match its checksum" in damaged.stderr
    last.write_bytes(b"not a checkpoint")
    (run_dir / "checkpoints" / "last.ckpt.sha256").unlink()  # no stamp: the load itself must fail cleanly
    broken = run(tmp, run_dir, "resume=true")
    assert broken.returncode == 2 and "cannot be loaded" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_a_resume_found_by_its_overrides_writes_into_the_interrupted_run(tmp_path):
    """No fixed run folder: resume=true finds the interrupted run by its overrides and writes everything
    (record, metrics CSV, log) there; the folder Hydra made for the resuming process is removed."""
    command = [sys.executable, "-m", "recbench", *TINY, f"paths.datasets={tmp_path / 'datasets'}",
               f"paths.experiments={tmp_path / 'experiments'}", "logger=csv"]
    env = {k: v for k, v in os.environ.items() if k != "RECBENCH_KILL_AT"}
    killed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**env, "RECBENCH_KILL_AT": "step:8"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    [run_dir] = (tmp_path / "experiments" / "runs").iterdir()
    resumed = subprocess.run([*command, "resume=true"], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in (tmp_path / "experiments" / "runs").iterdir()] == [run_dir.name]  # no stray folder
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"
    with open(run_dir / "csv" / "metrics.csv") as handle:
        epochs = {row["epoch"] for row in csv.DictReader(handle)}
    assert {"0", "1"} <= epochs  # the resumed run's rows are in the interrupted run's CSV, up to its last epoch
