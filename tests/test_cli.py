"""End-to-end: `python -m recbench ...` on tiny data writes a complete results.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recbench.errors import UserInputError
from tests.conftest import REAL_HEAD, REPO

TINY = ["data.replica.n_users=150", "data.replica.n_items=1500", "data.replica.episodes_per_user=15",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "loader.batch_size=256"]


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "recbench", f"paths.experiments={tmp_path / 'experiments'}",
               f"paths.datasets={tmp_path / 'datasets'}", "hydra.run.dir=" + str(tmp_path / "run"), *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def read_record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "results.json").read_text())


@pytest.mark.parametrize("model", ["a2gen", "mmoe"])
def test_main_job_on_the_synthetic_replica(tmp_path, model):
    done = run_cli(tmp_path, f"model={model}", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SYNTHETIC replica" in done.stderr  # the loud banner
    assert "Test metrics" in done.stdout and "purchase" in done.stdout
    record = read_record(tmp_path)
    assert record["status"] == "finished" and record["model"] == model and record["data"] == "tmall"
    assert record["data_source"] == "synthetic" and len(record["dataset_fingerprint"]) == 20
    for split in ("valid", "test"):
        for action in ("cart", "purchase", "favourite"):
            assert 0.0 <= record["metrics"][split][f"{split}/auc/{action}"] <= 1.0
            assert record["metrics"][split][f"{split}/time_mae/{action}"] >= 0.0
        assert 0.0 <= record["metrics"][split][f"{split}/gauc/mean"] <= 1.0
    assert record["train_seconds"] > 0 and record["train_samples_per_second"] > 0
    assert record["versions"]["torch"] and record["seed"] == 1
    assert record["config"]["data"]["source"] == "auto"  # the resolved config is recorded
    assert "gauc" in record["metric_definitions"]
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()


def test_real_sample_runs_with_source_raw(tmp_path):
    done = run_cli(tmp_path, "model=ple", "data.source=raw", f"data.raw_dir={REAL_HEAD}",
                   "trainer.max_epochs=1", "trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_record(tmp_path)
    assert record["data_source"] == "raw" and record["status"] == "finished"
    assert record["dataset_stats"]["rows"] == 10_000


def test_missing_raw_files_fail_with_one_line_and_a_failed_record(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli(tmp_path, "model=mmoe", "data.source=raw", f"data.raw_dir={empty}")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("recbench: error:"), done.stderr
    assert "user_log_format1.csv" in lines[0] and "Fix:" in lines[0]
    record = read_record(tmp_path)
    assert record["status"] == "failed" and "user_log_format1.csv" in record["error"]
    assert not (tmp_path / "datasets" / "tmall" / "cache").exists()


@pytest.mark.parametrize("override", ["data.sorce=raw", "model.net.no_such_key=3"])
def test_misspelt_config_key_is_one_line(tmp_path, override):
    done = subprocess.run([sys.executable, "-m", "recbench", "model=mmoe", override], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("recbench: error:") and "Fix:" in lines[0], done.stderr
    assert override.split("=")[0] in lines[0]


@pytest.mark.parametrize("path", ["/data/my data (copy)", "/data/x's data", "/data/[old] data", "/data/a=b c"])
def test_a_path_hydra_cannot_read_unquoted_names_itself_and_the_quoting_that_works(path):
    """Not "check the key's spelling": the message names the override and shows the quoted form, which
    then reads back as the path given."""
    import re

    from hydra import compose, initialize_config_dir

    from recbench.__main__ import CONF_DIR, check_overrides

    with pytest.raises(UserInputError) as caught:
        check_overrides(["model=mmoe", f"paths.datasets={path}"])
    message = str(caught.value)
    assert f"cannot read the override 'paths.datasets={path}'" in message and "spelling" not in message
    quoted = re.search(r'e\.g\. "(.+)" \(double quotes', message).group(1)
    check_overrides(["model=mmoe", quoted])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        assert compose("config", overrides=["model=mmoe", quoted]).paths.datasets == path


def test_non_finite_loss_stops_with_one_line_and_a_failed_record(tmp_path):
    done = run_cli(tmp_path, "model=mmoe", *TINY, "optimizer.dense.lr=1e30", "optimizer.sparse.lr=1e30",
                   "optimizer.gradient_clip=null")
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert len(lines) == 1 and "non-finite training loss at epoch 0, step" in lines[0] and "Fix:" in lines[0]
    assert "Traceback" not in done.stderr
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "failed" and "non-finite" in record["error"]


@pytest.mark.parametrize("override,key", [("loader.batch_size=0", "loader.batch_size"),
                                          ("optimizer.dense.lr=-0.1", "optimizer.dense.lr")])
def test_impossible_config_values_are_one_line_before_any_data_is_read(tmp_path, override, key):
    done = run_cli(tmp_path, "model=mmoe", *TINY, override)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert len(lines) == 1 and f"config '{key}'" in lines[0] and "Fix:" in lines[0]
    assert not (tmp_path / "datasets").exists()  # checked before the replica is even written


def test_help_prints_recbench_usage_groups_and_examples_first():
    done = subprocess.run([sys.executable, "-m", "recbench", "-h"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("recbench: benchmark")
    for group in ("data:", "model:", "debug:", "experiment:"):
        assert f"\n  {group}" in done.stdout
    assert "python -m recbench eval ckpt_path=" in done.stdout and "fuxictr" in done.stdout
