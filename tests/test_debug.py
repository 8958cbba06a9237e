"""Debug presets (`debug=fdr | overfit | limit`, conf/debug/): each runs end to end on a tiny replica, in
its own experiments/debug folder, and does what its name says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, explain
from tests.test_cli import TINY


@pytest.mark.parametrize("preset", ["fdr", "overfit", "limit"])
def test_each_debug_preset_runs_and_does_what_it_says(tmp_path, preset):
    tiny = [o for o in TINY if not o.startswith("trainer.max_epochs")]  # the preset sets the epochs
    command = [sys.executable, "-m", "recbench", "model=mmoe", f"debug={preset}", *tiny, "logger=csv",
               f"paths.datasets={tmp_path / 'datasets'}", f"paths.root={tmp_path}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, explain(done)
    [record_path] = (tmp_path / "experiments" / "debug" / "runs").glob("*/results.json")  # out of the leaderboard's way
    record = json.loads(record_path.read_text())
    assert record["status"] == "finished" and record["config"]["trainer"]["detect_anomaly"] is True
    history = record["history"]
    if preset == "fdr":  # one batch each, no checkpoint: the weights training ended with are tested
        assert record["evaluated_checkpoint"].startswith("none") and len(history) == 1
    elif preset == "overfit":  # validating on the 3 training batches it learns: AUC climbs
        assert len(history) == 20
        assert history[-1]["valid/auc/mean"] > history[0]["valid/auc/mean"] + 0.15  # measured: 0.40 -> 0.66
    else:
        assert len(history) == 3 and record["epochs_run"] == 3
