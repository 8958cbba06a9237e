"""No run overwrites another: runs started in the same second get their own folders, and a folder that a
live run holds is refused before anything is written to it (recbench/claims.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbench.claims import CLAIM, RunDirInUse, claim_run_dir
from tests.conftest import REPO
from tests.test_cli import TINY


def command(tmp_path: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "recbench", "model=mmoe", f"paths.experiments={tmp_path / 'experiments'}",
            f"paths.datasets={tmp_path / 'datasets'}", "logger=csv", *TINY, *overrides]


def test_two_runs_started_together_keep_their_own_folders_and_metrics(tmp_path):
    started = [subprocess.Popen(command(tmp_path, f"seed={seed}"), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for process in started:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    records = {}
    for path in (tmp_path / "experiments" / "runs").glob("*/results.json"):
        record = json.loads(path.read_text())
        records[record["seed"]] = record
        assert record["run_dir"] == str(path.parent)
        assert (path.parent / "csv" / "metrics.csv").exists()  # each logger wrote into its own folder
    assert {1, 2} <= set(records)
    assert records[1]["run_dir"] != records[2]["run_dir"]
    assert records[1]["metrics"]["test"] != records[2]["metrics"]["test"]  # seed 1's record holds seed 1's metrics


def test_a_folder_held_by_a_live_run_is_refused_and_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CLAIM).write_text(f"{os.getpid()}\n")  # this test process: alive
    done = subprocess.run(command(tmp_path, f"hydra.run.dir={run_dir}"), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2
    assert f"is in use by another recbench run (pid {os.getpid()})" in done.stderr
    assert not (run_dir / "results.json").exists() and not (run_dir / "checkpoints").exists()


def test_a_claim_left_by_a_dead_run_is_taken_over_and_released(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / CLAIM).write_text(dead.stdout)  # that process has exited
    release = claim_run_dir(tmp_path)
    assert (tmp_path / CLAIM).read_text().strip() == str(os.getpid())
    release()
    assert not (tmp_path / CLAIM).exists()
    (tmp_path / CLAIM).write_text("1\n")  # pid 1 is always alive
    with pytest.raises(RunDirInUse, match="pid 1"):
        claim_run_dir(tmp_path)


def test_records_are_standard_json_with_normal_permissions_and_read_back_as_nan(tmp_path):
    import math
    import stat

    from recbench.records import write_json_atomic
    from recbench.report.collect import _read_record

    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "finished", "metrics": {"test": {"auc": 0.7, "ndcg@10": float("nan")}},
                             "history": [{"epoch": 0, "loss": float("inf")}]})

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    record = json.loads(path.read_text(), parse_constant=refuse)  # no bare NaN / Infinity
    assert record["metrics"]["test"]["ndcg@10"] is None and record["history"][0]["loss"] is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    run = _read_record(path)
    assert run.status == "finished" and math.isnan(run.record["metrics"]["test"]["ndcg@10"])
