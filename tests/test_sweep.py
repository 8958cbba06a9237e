"""Sweeps end to end: `python -m recbench -m experiment=...` with a failing member, then
`python -m recbench.report` on it; the experiment, launcher, sweeper and search-space configs compose."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO

CONF = REPO / "conf"
TINY = ["data.replica.n_users=150", "data.replica.n_items=1500", "data.replica.episodes_per_user=15",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "loader.batch_size=256"]
# the models of a paper's plugin: each needs an experiment config that proposes it (once its conf/model exists)
PAPER_MODELS = ("a2gen", "lcu", "moment_cross", "llm_alignment")
PLUGINS = {"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit": "hydra_plugins.hydra_submitit_launcher",
           "optuna": "hydra_plugins.hydra_optuna_sweeper"}


def recbench(*args: str, cwd: Path = REPO, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def needs_plugin(name: str) -> None:
    """Skip without the Hydra plugin; under CI (CI set) fail instead: CI installs `.[sweeps]`."""
    try:
        found = importlib.util.find_spec(PLUGINS[name]) is not None
    except ModuleNotFoundError:  # no hydra_plugins package at all
        found = False
    if not found:
        message = f"Hydra plugin {PLUGINS[name]} not installed (pip install -e '.[sweeps]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# --- a tiny sweep with a failing member, then the report ---------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """experiment=a2gen_tmall over mmoe, dcn, ple x seeds 1, 2; dcn cannot train on Tmall (no action
    outputs) and fails after the data is built, between the mmoe and the ple members."""
    root = tmp_path_factory.mktemp("sweep")
    done = recbench("recbench", "-m", "experiment=a2gen_tmall", "model=mmoe,dcn,ple", "seed=1,2", *TINY,
                    f"paths.experiments={root / 'experiments'}", f"paths.datasets={root / 'datasets'}")
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "sweep_stdout.txt").write_text(done.stdout)
    (sweep_dir,) = (root / "experiments" / "a2gen_tmall").iterdir()  # experiments/<experiment>/<date>_<time>
    return sweep_dir


def test_each_member_has_its_run_folder_and_a_failing_member_does_not_stop_the_sweep(sweep):
    members = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert members == ["0_mmoe_tmall_seed1", "1_mmoe_tmall_seed2", "2_dcn_tmall_seed1", "3_dcn_tmall_seed2",
                       "4_ple_tmall_seed1", "5_ple_tmall_seed2"]
    records = {name: json.loads((sweep / name / "results.json").read_text()) for name in members}
    for name, record in records.items():
        if "dcn" in name:
            assert record["status"] == "failed" and "does not fit data 'tmall'" in record["error"]
            assert "\n" not in record["error"] and record["model"] == "dcn"
        else:
            assert record["status"] == "finished" and record["config"]["benchmark"]["name"] == "a2gen_tmall"
            # tracking: the resolved config and the per-epoch + final test metrics in the run's CSV log
            assert (sweep / name / "csv" / "metrics.csv").is_file()
            header = (sweep / name / "csv" / "metrics.csv").read_text().splitlines()[0]
            assert "valid/auc/mean" in header and "test/auc/mean" in header
            assert yaml.safe_load((sweep / name / "csv" / "hparams.yaml").read_text())["seed"] == record["seed"]


def test_a_sweep_ends_with_a_table_of_its_members_and_the_report_command(sweep):
    printed = (sweep.parents[2] / "sweep_stdout.txt").read_text()
    assert f"Sweep {sweep}: 4 of 6 members finished" in printed
    rows = {line.split()[0]: line for line in printed.splitlines() if line.startswith(("0_", "2_", "5_"))}
    assert " finished " in rows["0_mmoe_tmall_seed1"] and " failed " in rows["2_dcn_tmall_seed1"]
    assert "does not fit data" in rows["2_dcn_tmall_seed1"]
    assert f"leaderboard: python -m recbench.report {sweep}" in printed


def test_report_of_the_sweep_equals_the_records(sweep, tmp_path):
    out = tmp_path / "board"
    done = recbench("recbench.report", str(sweep), "--out", str(out), "--format", "md,html,csv,json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    finished = [r for r in records if r["status"] == "finished"]
    board = json.loads((out / "leaderboard.json").read_text())
    (table,) = board["tables"]
    assert (table["data"], table["data_source"], table["monitor"]) == ("tmall", "synthetic", "valid/auc/mean")
    assert table["experiments"] == ["a2gen_tmall"]
    rows = {row["model"]: row for row in table["rows"]}
    assert sorted(rows) == ["mmoe", "ple"] and all(row["role"] == "baseline" for row in rows.values())
    t975_df1 = 12.706204736174707  # t_{0.975, 1}
    for model, row in rows.items():
        mine = sorted((r for r in finished if r["model"] == model), key=lambda r: r["seed"])
        assert row["seeds"] == [1, 2] and row["n_seeds"] == 2
        for metric, stat in row["metrics"].items():
            values = [r["metrics"]["test"][metric] for r in mine]
            assert stat["values"] == {"1": values[0], "2": values[1]}  # the records' numbers, unchanged
            assert stat["mean"] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
            assert stat["ci95"] == pytest.approx(t975_df1 * abs(values[0] - values[1]) / 2, rel=1e-7, abs=1e-15)
        assert row["train_seconds_mean"] == pytest.approx(np.mean([r["train_seconds"] for r in mine]))
    # the reference is the baseline with the better mean VALIDATION value of the monitored metric
    valid = {m: np.mean([r["metrics"]["valid"]["valid/auc/mean"] for r in finished if r["model"] == m])
             for m in rows}
    reference = max(valid, key=valid.get)
    other = next(m for m in rows if m != reference)
    assert table["reference"] == reference and rows[reference]["is_reference"]
    test = rows[other]["paired_vs_reference"]["test/auc/mean"]
    d = [a["metrics"]["test"]["test/auc/mean"] - b["metrics"]["test"]["test/auc/mean"]
         for a, b in zip(*[sorted((r for r in finished if r["model"] == m), key=lambda r: r["seed"])
                           for m in (other, reference)])]
    t = np.mean(d) / (np.std(d, ddof=1) / math.sqrt(2))
    assert test["n_pairs"] == 2 and test["delta"] == pytest.approx(np.mean(d))
    assert test["p"] == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)), rel=1e-9)  # t with 1 df = Cauchy
    # the failed members are listed with their error line
    failed = board["runs_without_results"]
    assert sorted((f["model"], f["seed"], f["status"]) for f in failed) == [("dcn", 1, "failed"), ("dcn", 2, "failed")]
    assert all("does not fit data 'tmall'" in f["error"] for f in failed)
    md = (out / "leaderboard.md").read_text()
    stat = rows["ple"]["metrics"]["test/auc/mean"]
    assert f"{stat['mean']:.4f} ± {stat['ci95']:.4f}" in md and "## Runs without results" in md
    assert "2_dcn_tmall_seed1" in md and (out / "leaderboard_files" / "tmall-synthetic-auc-mean_bars.png").is_file()
    assert 'src="data:image/png;base64,' in (out / "leaderboard.html").read_text()


# --- configs -----------------------------------------------------------------------------------------


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", experiment_names())
def test_every_member_of_an_experiment_composes(name):
    from hydra import compose, initialize_config_dir

    from recbench import config  # noqa: F401  (registers resolvers)

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
        bench, params = cfg.benchmark, cfg.hydra.sweeper.params
        assert bench.name == name and bench.paper and bench.proposed
        # a comparison of models names its baselines; an ablation grid varies one model's settings instead
        assert bench.baselines or (set(params) - {"seed", "model"}), "no baselines and nothing else varies"
        seeds = params.seed.split(",")
        assert len(seeds) >= 3, "report intervals need >= 3 seeds"
        # members: `model=...` or `arm=...` (conf/arm: a model with its data settings)
        key = "arm" if "arm" in params else "model"
        choices = params[key].split(",") if key in params else [cfg.hydra.runtime.choices.model]
        members = {}
        for choice in choices:  # every member composes, on the experiment's dataset
            member = compose("config", overrides=[f"experiment={name}", f"{key}={choice}", f"seed={seeds[0]}"],
                             return_hydra_config=True)
            assert member.data._target_ == cfg.data._target_ and member.benchmark == cfg.benchmark
            members[choice] = member.hydra.runtime.choices.model
            assert (CONF / "model" / f"{members[choice]}.yaml").is_file()
        for model in [*bench.proposed, *bench.baselines, *bench.get("ablations", [])]:
            assert model in members.values(), f"{model} is in benchmark but not in the sweep"
        assert cfg.hydra.sweep.dir.startswith(str(cfg.paths.experiments) + f"/{name}/")


def test_every_paper_plugin_has_an_experiment():
    proposed = set()
    for path in (CONF / "experiment").glob("*.yaml"):
        proposed.update(yaml.safe_load(path.read_text())["benchmark"]["proposed"])
    for model in PAPER_MODELS:
        if (CONF / "model" / f"{model}.yaml").is_file():
            assert model in proposed, f"no conf/experiment/*.yaml proposes {model}"


def test_a_single_run_of_an_experiment_is_its_proposed_model():
    done = recbench("recbench", "--cfg", "job", "experiment=a2gen_tmall")
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert cfg["model"]["net"]["_target_"] == "recbench.models.a2gen.A2Gen"
    assert cfg["benchmark"]["proposed"] == ["a2gen"]


@pytest.mark.parametrize("override, plugin, expect", [
    ("hydra/launcher=parallel", "joblib", {"launcher._target_": "JoblibLauncher", "launcher.n_jobs": 2}),
    ("hydra/launcher=slurm", "submitit", {"launcher._target_": "SlurmLauncher", "launcher.timeout_min": 240,
                                          "launcher.submitit_folder": "/.submitit/%j"}),
    ("hparams_search=mmoe", "optuna", {"sweeper._target_": "OptunaSweeper", "sweeper.direction": "maximize",
                                       "sweeper.sampler._target_": "TPESampler"}),
])
def test_launcher_and_sweeper_configs_compose(override, plugin, expect):
    """What `--cfg hydra` composes, in process, with every interpolation resolved (the sweeper's
    direction follows task.monitor_mode; the submitit folder lies in the sweep folder)."""
    needs_plugin(plugin)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recbench import config  # noqa: F401  (registers resolvers)

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[override], return_hydra_config=True)
        for dotted, value in expect.items():
            assert str(OmegaConf.select(cfg.hydra, dotted)).endswith(str(value)), (dotted, value)


def test_cfg_hydra_composes_an_optuna_search_on_the_parallel_launcher():
    needs_plugin("optuna")
    needs_plugin("joblib")
    done = recbench("recbench", "--cfg", "hydra", "hparams_search=lcu", "hydra/launcher=parallel")
    assert done.returncode == 0, done.stderr[-2000:]
    hydra_cfg = yaml.safe_load(done.stdout)["hydra"]
    assert hydra_cfg["launcher"]["_target_"].endswith("JoblibLauncher")
    assert hydra_cfg["sweeper"]["_target_"].endswith("OptunaSweeper") and hydra_cfg["sweeper"]["n_trials"] == 20
    assert hydra_cfg["sweeper"]["params"]["task.heads.comments.user_agnostic_weight"] == "tag(log, interval(0.01, 1.0))"
    assert hydra_cfg["runtime"]["choices"]["data"] == "kuaicomt"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_every_search_space_names_real_keys(name):
    """Each searched key exists in the composed config of that search (no typo searches nothing)."""
    needs_plugin("optuna")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recbench import config  # noqa: F401

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={name}"], return_hydra_config=True)
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
        for key in cfg.hydra.sweeper.params:
            assert OmegaConf.select(cfg, key) is not None, f"hparams_search/{name}.yaml searches unknown key {key}"


# --- slow: the plugins really run (python -m pytest -m slow tests/test_sweep.py) ---------------------


@pytest.mark.slow
def test_optuna_search_runs_two_trials(tmp_path):
    needs_plugin("optuna")
    done = recbench("recbench", "-m", "hparams_search=mmoe", "hydra.sweeper.n_trials=2", *TINY,
                    f"paths.experiments={tmp_path}", f"paths.datasets={tmp_path / 'datasets'}")
    assert done.returncode == 0, done.stderr[-3000:]
    (search,) = (tmp_path / "hparams" / "mmoe").iterdir()
    result = yaml.safe_load((search / "optimization_results.yaml").read_text())
    assert 0.0 <= result["best_value"] <= 1.0 and "model.net.num_experts" in result["best_params"]
    assert len(list(search.glob("*/results.json"))) == 2


@pytest.mark.slow
def test_joblib_launcher_runs_members_in_parallel_processes(tmp_path):
    needs_plugin("joblib")
    done = recbench("recbench", "-m", "hydra/launcher=parallel", "model=mmoe,ple", *TINY,
                    f"paths.experiments={tmp_path}", f"paths.datasets={tmp_path / 'datasets'}")
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/results.json")]
    assert sorted(r["model"] for r in records) == ["mmoe", "ple"] and all(r["status"] == "finished" for r in records)
