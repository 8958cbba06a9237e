"""Out of disk space while writing: one line and exit 2, the test metrics printed regardless; a cache that
cannot be written is one line too, and leaves no temp folder behind."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from recbench.errors import UserInputError
from tests.conftest import REPO
from tests.test_cli import TINY


def test_a_full_disk_at_results_json_prints_the_metrics_and_exits_2(tmp_path):
    command = [sys.executable, "-m", "recbench", "model=mmoe", f"paths.datasets={tmp_path / 'datasets'}",
               f"hydra.run.dir={tmp_path / 'run'}", "logger=none", *TINY]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RECBENCH_NO_SPACE": "results.json"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Test metrics: model=mmoe" in done.stdout and "auc" in done.stdout  # printed before the write
    errors = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_cache_that_cannot_be_written_is_one_line_and_leaves_no_temp(tmp_path, monkeypatch):
    import numpy as np

    from tests.test_tmall_adapter import make_adapter

    adapter = make_adapter(tmp_path, source="synthetic")
    saved = []

    def full_after_two(path, *args, **kwargs):  # the disk fills up part-way through the cache
        if len(saved) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real_save(path, *args, **kwargs)

    real_save = np.save
    monkeypatch.setattr(np, "save", full_after_two)
    with pytest.raises(UserInputError, match="could not write the cache .*No space left.*data.use_cache=false"):
        adapter.prepare()
    assert saved and not list((tmp_path / "cache").glob(".*"))  # the half-written temp folder is gone


def run_without_space(tmp_path, file_name: str, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "recbench", "model=mmoe", f"paths.datasets={tmp_path / 'datasets'}",
               f"hydra.run.dir={tmp_path / 'run'}", "logger=none", *TINY, *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RECBENCH_NO_SPACE": file_name})


def test_a_full_disk_at_a_checkpoint_is_one_line_and_a_failed_record(tmp_path):
    done = run_without_space(tmp_path, "last.ckpt", "checkpoint.every_n_steps=2")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "last.ckpt for the run in" in errors[0] and "(No space left on device)" in errors[0]
    assert "resume=true" in errors[0]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "failed" and "No space left on device" in record["error"]


def test_a_failed_run_whose_record_cannot_be_written_says_both_in_one_line(tmp_path):
    done = run_without_space(tmp_path, "results.json", "optimizer.dense.lr=-1")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "optimizer.dense.lr" in errors[0] and "results.json could not be written: No space left" in errors[0]
    assert not (tmp_path / "run" / "results.json").exists()
