"""A results.json from someone else never runs code: recbench.rerun refuses overrides outside the project's own
config groups and keys (hydra.*, _target_, outside paths) unless --trust (recbench/rerun.py)."""

from __future__ import annotations

import json

import pytest

from recbench.rerun import main, project_keys, refusal


@pytest.mark.parametrize("override", ["model=mmoe", "data=kuailive", "seed=3", "trainer.max_epochs=2",
                                      "+text.finetune=false", "data.replica.n_users=150", "loader.batch_size=256",
                                      "paths.datasets=/data/kuailive", "arm=moment_cross_30s", "model.net.dropout=0.1"])
def test_the_projects_own_overrides_are_re_run(override):
    assert refusal(override, project_keys()) is None


@pytest.mark.parametrize("override,why", [
    ("+hydra.callbacks.x._target_=shutil.copy", "Hydra"), ("hydra/launcher=slurm", "Hydra"),
    ("hydra.searchpath=[file:///tmp/evil]", "Hydra"), ("+model.net._target_=os.system", "_target_"),
    ("model.net.fusion=${_target_}", "_target_"), ("+evil=1", "'evil' is not one of"),
    ("paths.models=/tmp/models", "outside the project"), ("+text.model=/tmp/some_model", "outside the project")])
def test_overrides_that_could_run_code_are_refused(override, why):
    assert why in refusal(override, project_keys())


def test_a_hostile_record_is_refused_before_anything_runs(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    record = {"overrides": ["model=mmoe", "+hydra.callbacks.x._target_=shutil.copy", "hydra.run.dir=x"]}
    (run / "results.json").write_text(json.dumps(record))
    assert main([str(run), "--into", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "'+hydra.callbacks.x._target_=shutil.copy' is not re-run" in err and "--trust" in err
    assert not (tmp_path / "again").exists()
