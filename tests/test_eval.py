"""`python -m recbench eval ckpt_path=...`: a saved checkpoint evaluated again gives the record's test metrics
exactly, and `predictions=true` writes per-sample outputs that reproduce the metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from recbench.__main__ import eval_arguments
from recbench.errors import UserInputError
from tests.conftest import REPO, explain
from tests.test_cli import TINY


def recbench(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recbench", *arguments], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    done = recbench("model=mmoe", *TINY, "logger=none", "predictions=true", f"paths.datasets={tmp / 'datasets'}",
                    f"hydra.run.dir={tmp / 'run'}")
    assert done.returncode == 0, explain(done)
    return tmp, json.loads((tmp / "run" / "results.json").read_text())


def test_a_run_shows_and_keeps_its_config_tree_model_summary_and_console(trained):
    tmp, record = trained
    run_dir = tmp / "run"
    log = (run_dir / "__main__.log").read_text()
    assert "├─ model: mmoe" in log and "Total params" in log  # printed at start, copied to the log
    assert "Test metrics: model=mmoe" in log and "Epoch 0" not in log  # the console, without progress redraws
    assert "num_experts: 4" in (run_dir / "config.yaml").read_text()  # the whole resolved config
    assert "net.experts" in (run_dir / "model_summary.txt").read_text()


def test_evaluating_the_best_checkpoint_gives_the_records_metrics_exactly(trained):
    tmp, record = trained
    done = recbench("eval", f"ckpt_path={tmp / 'run' / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={tmp / 'eval'}")
    assert done.returncode == 0, explain(done)
    assert "with its run's overrides: model=mmoe" in done.stderr  # the run's settings, read from its folder
    evaluated = json.loads((tmp / "eval" / "results.json").read_text())
    assert evaluated["mode"] == "eval" and evaluated["evaluated_checkpoint"] == record["evaluated_checkpoint"]
    assert evaluated["metrics"]["test"] == record["metrics"]["test"]
    assert evaluated["metrics"]["valid"]["valid/auc/mean"] == record["metrics"]["valid"]["valid/auc/mean"]


def test_predictions_round_trip_to_the_recorded_metrics(trained):
    tmp, record = trained
    for split in ("valid", "test"):
        frame = pl.read_parquet(tmp / "run" / "predictions" / f"{split}.parquet")
        assert frame["row"].to_list() == list(range(len(frame)))
        scores, labels = np.stack(frame["outcome.logit"].to_numpy()), np.stack(frame["outcome.label"].to_numpy())
        aucs = sorted(roc_auc_score(labels[:, k], scores[:, k]) for k in range(labels.shape[1]))
        metrics = record["metrics"]["test" if split == "test" else "valid"]
        recorded = sorted(v for k, v in metrics.items() if k.startswith(f"{split}/auc/") and not k.endswith("/mean"))
        np.testing.assert_allclose(aucs, recorded, atol=1e-6)


def test_a_checkpoint_for_another_model_or_none_at_all_is_one_line(trained, tmp_path):
    tmp, _ = trained
    with pytest.raises(UserInputError, match="eval needs an existing checkpoint"):
        eval_arguments(["eval", f"ckpt_path={tmp_path / 'missing.ckpt'}"])
    done = recbench("eval", f"ckpt_path={tmp / 'run' / 'checkpoints' / 'best.ckpt'}", "model=deepfm", "task=ctr",
                    f"hydra.run.dir={tmp_path / 'other'}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert done.returncode == 2 and len(errors) == 1 and "does not fit model" in errors[0], explain(done)
