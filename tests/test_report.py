"""The leaderboard (`python -m recbench.report`) on hand-made records: statistics against hand-computed
values, grouping rules, bad input, the machine formats, and the html page in headless Chromium."""

from __future__ import annotations

import copy
import csv
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from recbench import report as R

# t_{0.975, df} from printed tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
T975 = {1: 12.7062047, 2: 4.30265273, 3: 3.18244631, 4: 2.77644511, 9: 2.26215716, 29: 2.04522964}


# --- statistics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_printed_tables(df):
    assert R.t_ppf(0.975, df) == pytest.approx(T975[df], abs=1e-6)
    assert R.STUDENT_T.ppf(0.975, df) == pytest.approx(T975[df], abs=1e-6)
    assert R.t_cdf(T975[df], df) == pytest.approx(0.975, abs=1e-8)


def test_own_t_distribution_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 30, 200):
        for t in (0.0, 0.3, 1.0, 2.5, 7.0, 40.0):
            assert R.t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-15)
        for q in (0.6, 0.9, 0.975, 0.995):
            assert R.t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9)


def test_confidence_interval_is_hand_computed():
    values = {1: 0.70, 2: 0.72, 3: 0.74}
    stat = R.Stat(values)
    mean, sd = 0.72, 0.02  # sd = sqrt(((-.02)^2 + 0 + .02^2) / 2) = 0.02
    assert stat.n == 3 and stat.mean == pytest.approx(mean, abs=1e-15) and stat.sd == pytest.approx(sd, rel=1e-12)
    assert stat.ci95 == pytest.approx(T975[2] * sd / math.sqrt(3), rel=1e-7)  # 0.049683...
    assert stat.ci95 == pytest.approx(0.0496828, abs=1e-6)
    one = R.Stat({1: 0.5})
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.ci95)
    assert R.fmt_stat(one) == "0.5000 (n=1)" and R.fmt_stat(stat) == "0.7200 ± 0.0497"


def test_paired_t_test_is_hand_computed():
    a = {1: 0.75, 2: 0.70, 3: 0.80, 4: 0.9}
    b = {1: 0.70, 2: 0.68, 3: 0.74, 7: 0.1}  # seeds 4 and 7 are not paired
    d = np.array([0.05, 0.02, 0.06])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    test = R.paired_t_test(a, b)
    assert test.n == 3 and test.delta == pytest.approx(d.mean()) and test.t == pytest.approx(t)
    assert t == pytest.approx(math.sqrt(13), rel=1e-12)  # mean 13/300, sd/sqrt(3) = sqrt(13)/300
    # two-sided p at df = 2: 1 - t / sqrt(t^2 + 2) (closed form of the t cdf for 2 degrees of freedom)
    assert test.p == pytest.approx(1 - math.sqrt(13 / 15), rel=1e-9)  # = 0.06904...
    stats = pytest.importorskip("scipy.stats")
    assert test.p == pytest.approx(stats.ttest_rel([0.75, 0.70, 0.80], [0.70, 0.68, 0.74]).pvalue, rel=1e-9)


def test_paired_t_test_edge_cases():
    assert R.paired_t_test({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.6}).p == 1.0  # identical on every seed
    constant = R.paired_t_test({1: 0.6, 2: 0.7}, {1: 0.5, 2: 0.6})
    assert constant.p == 0.0 and constant.delta == pytest.approx(0.1)
    assert math.isnan(R.paired_t_test({1: 0.6}, {1: 0.5}).p)  # one pair: no test
    assert R.paired_t_test({1: 0.6}, {2: 0.5}).n == 0


# --- records -> tables -------------------------------------------------------------------------------

BASE_CONFIG = {
    "seed": 1, "paths": {"root": "/home/u/recbench", "datasets": "/home/u/recbench/datasets",
                         "experiments": "/home/u/recbench/experiments", "models": "/home/u/recbench/models"},
    "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": "/x/run"},
    "data": {"_target_": "recbench.data.tmall.TmallAdapter", "source": "auto",
             "raw_dir": "/home/u/recbench/datasets/tmall/raw", "history_length": 20},
    "model": {"net": {"_target_": "recbench.models.mmoe.MMoE", "embedding_dim": 16}},
    "task": {"monitor": "valid/auc/mean", "monitor_mode": "max"},
    "trainer": {"max_epochs": 6, "enable_progress_bar": True}, "loader": {"batch_size": 512, "eval_batch_size": 4096},
    "benchmark": {"name": "toy", "proposed": ["a2gen"], "baselines": ["mmoe", "ple"]},
}


def make_record(model: str, seed: int, auc: float, valid_auc: float, *, mae: float = 0.5, source: str = "synthetic",
                data: str = "tmall", status: str = "finished", config_changes: dict | None = None) -> dict:
    config = copy.deepcopy(BASE_CONFIG)
    config["seed"] = seed
    config["model"]["net"]["_target_"] = f"recbench.models.{model}.X"
    for dotted, value in (config_changes or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return {"status": status, "model": model, "data": data, "task": "actions", "data_source": source, "seed": seed,
            "dataset_fingerprint": "f" * 20, "run_dir": f"/x/{model}_{seed}",
            "metrics": {"valid": {"epoch": 1, "valid/auc/mean": valid_auc},
                        "test": {"test/auc/mean": auc, "test/auc/cart": auc - 0.01, "test/time_mae/mean": mae}},
            "monitor": {"metric": "valid/auc/mean", "mode": "max", "best_epoch": 1},
            "history": [{"epoch": 0, "valid/auc/mean": valid_auc - 0.02}, {"epoch": 1, "valid/auc/mean": valid_auc}],
            "train_seconds": 10.0 + seed, "train_samples_per_second": 1000.0 * seed, "parameters": 1234,
            "metric_definitions": {"auc": "ROC AUC (toy)"}, "config": config}


def write_records(root: Path, records: list[dict]) -> None:
    for i, record in enumerate(records):
        path = root / f"{i}_{record['model']}_seed{record['seed']}" / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))


TOY = {  # model -> seed -> (test auc, valid auc)
    "a2gen": {1: (0.75, 0.74), 2: (0.70, 0.71), 3: (0.80, 0.79)},
    "mmoe": {1: (0.70, 0.70), 2: (0.68, 0.69), 3: (0.74, 0.73)},
    "ple": {1: (0.72, 0.66), 2: (0.71, 0.65), 3: (0.73, 0.67)},  # best test, worse validation than mmoe
}


@pytest.fixture()
def toy_runs(tmp_path) -> Path:
    records = [make_record(m, s, a, v, mae=0.1 * s) for m, seeds in TOY.items() for s, (a, v) in seeds.items()]
    write_records(tmp_path / "runs", records)
    return tmp_path / "runs"


def test_table_statistics_and_reference(toy_runs):
    tables = R.build_tables(R.find_runs([toy_runs]))
    assert len(tables) == 1
    table = tables[0]
    assert (table.data, table.data_source, table.monitor, table.primary) == ("tmall", "synthetic", "valid/auc/mean",
                                                                           "test/auc/mean")
    rows = {row.model: row for row in table.rows}
    assert [row.model for row in table.rows] == ["a2gen", "ple", "mmoe"]  # best test mean first
    assert rows["a2gen"].role == "proposed" and rows["mmoe"].role == "baseline"
    # the reference is the best baseline by VALIDATION (mmoe), not by test (ple)
    assert table.reference is rows["mmoe"] and rows["mmoe"].is_reference
    for model, seeds in TOY.items():
        stat = rows[model].metrics["test/auc/mean"]
        values = [a for a, _ in seeds.values()]
        assert stat.n == 3 and stat.mean == pytest.approx(np.mean(values), abs=1e-15)
        assert stat.ci95 == pytest.approx(T975[2] * np.std(values, ddof=1) / math.sqrt(3), rel=1e-7)
    test = rows["a2gen"].paired["test/auc/mean"]
    assert test.n == 3 and test.delta == pytest.approx(0.13 / 3)
    assert table.direction("test/time_mae/mean") == "min" and table.direction("test/auc/cart") == "max"
    assert table.headline_metrics() == ["test/auc/mean", "test/time_mae/mean"]  # auc/cart: its mean is shown
    assert table.best("test/auc/mean") == pytest.approx(0.75) and table.best("test/time_mae/mean") == pytest.approx(0.2)


def test_config_beyond_the_seed_is_never_averaged(tmp_path):
    records = [make_record("mmoe", s, 0.7, 0.7) for s in (1, 2)]
    records += [make_record("mmoe", s, 0.6, 0.6, config_changes={"model.net.embedding_dim": 32}) for s in (1, 2)]
    # non-semantic differences (paths, logger, progress bar, eval batch size, seed) keep one row
    records.append(make_record("mmoe", 3, 0.8, 0.8, config_changes={
        "paths.root": "/other", "trainer.enable_progress_bar": False, "loader.eval_batch_size": 1,
        "logger._target_": "lightning.pytorch.loggers.TensorBoardLogger", "data.raw_dir": "/somewhere/else"}))
    write_records(tmp_path, records)
    (table,) = R.build_tables(R.find_runs([tmp_path]))
    rows = sorted(table.rows, key=lambda row: row.label)
    assert [len(row.runs) for row in rows] == [3, 2]
    assert rows[0].label == "mmoe (embedding_dim=16)" and rows[1].label == "mmoe (embedding_dim=32)"
    assert rows[0].metrics["test/auc/mean"].mean == pytest.approx((0.7 + 0.7 + 0.8) / 3)
    assert rows[1].metrics["test/auc/mean"].mean == pytest.approx(0.6)


def test_synthetic_and_real_data_never_share_a_table(tmp_path):
    write_records(tmp_path, [make_record("mmoe", 1, 0.7, 0.7), make_record("mmoe", 1, 0.6, 0.6, source="raw")])
    tables = R.build_tables(R.find_runs([tmp_path]))
    assert sorted(t.data_source for t in tables) == ["raw", "synthetic"]
    assert all(len(t.rows) == 1 and len(t.rows[0].runs) == 1 for t in tables)


def test_a_rerun_of_the_same_seed_supersedes_the_older_record(tmp_path):
    write_records(tmp_path, [make_record("mmoe", 1, 0.6, 0.6), make_record("mmoe", 1, 0.7, 0.7)])
    old, _new = sorted(tmp_path.glob("*/results.json"))
    os.utime(old, (1_000_000, 1_000_000))
    (table,) = R.build_tables(R.find_runs([tmp_path]))
    (row,) = table.rows
    assert len(row.runs) == 1 and row.metrics["test/auc/mean"].mean == 0.7 and row.superseded[0].path == old


def test_roles_from_the_command_line_and_without_any(tmp_path):
    records = [make_record(m, s, a, v) for m, seeds in TOY.items() for s, (a, v) in seeds.items()]
    for record in records:
        del record["config"]["benchmark"]
    write_records(tmp_path, records)
    (table,) = R.build_tables(R.find_runs([tmp_path]))
    assert not table.roles_declared and table.reference.model == "a2gen"  # best validation overall
    (table,) = R.build_tables(R.find_runs([tmp_path]), baselines=["ple"])
    assert table.reference.model == "ple" and {r.model: r.role for r in table.rows}["mmoe"] == ""


# --- like with like: one table per shared settings ----------------------------------------------------

MIXED = {  # (replica users, epochs) -> model -> seed -> (test auc, valid auc)
    (600, 1): {"a2gen": {1: (0.71, 0.70), 2: (0.69, 0.70)}, "mmoe": {1: (0.70, 0.72), 2: (0.72, 0.73)},
               "ple": {1: (0.68, 0.66), 2: (0.69, 0.67)}},
    (2000, 1): {"mmoe": {1: (0.80, 0.78), 2: (0.81, 0.79)}, "ple": {1: (0.75, 0.80), 2: (0.79, 0.81)}},
    (600, 6): {"mmoe": {1: (0.76, 0.75), 2: (0.78, 0.76)}, "ple": {1: (0.77, 0.74), 2: (0.74, 0.73)}},
}


def mixed_record(model: str, seed: int, users: int, epochs: int) -> dict:
    """A record of MIXED; a2gen trains with its own task and mmoe with its own optimiser (as their model
    configs set), and a2gen alone reports exact_match."""
    auc, valid = MIXED[(users, epochs)][model][seed]
    changes = {"data.replica.n_users": users, "trainer.max_epochs": epochs}
    if model == "a2gen":
        changes |= {"task.heads.sequence.ce_weight": 1.0, "model.net.generator": "implicit"}
    if model == "mmoe":
        changes |= {"optimizer.dense._target_": "recbench.optim.adatask.AdaTask"}
    record = make_record(model, seed, auc, valid, config_changes=changes)
    record["dataset_fingerprint"] = f"replica{users}"  # the replica size changes the data files
    record["task"] = "action_generation" if model == "a2gen" else "actions"
    if model == "a2gen":
        record["metrics"]["test"]["test/exact_match/sequence"] = 0.3 + 0.01 * seed
    return record


@pytest.fixture()
def mixed_runs(tmp_path) -> Path:
    records = [mixed_record(m, s, users, epochs) for (users, epochs), models in MIXED.items()
               for m, seeds in models.items() for s in seeds]
    write_records(tmp_path / "mixed", records)
    return tmp_path / "mixed"


def test_mixed_settings_give_separate_tables_and_no_cross_data_comparison(mixed_runs):
    tables = R.build_tables(R.find_runs([mixed_runs]))
    assert [t.heading for t in tables] == [
        "data=tmall, data.replica.n_users=600, trainer.max_epochs=1",
        "data=tmall, data.replica.n_users=600, trainer.max_epochs=6",
        "data=tmall, data.replica.n_users=2000, trainer.max_epochs=1"]
    assert len({t.slug for t in tables}) == 3  # plots of the tables never overwrite each other
    for table, (users, epochs) in zip(tables, [(600, 1), (600, 6), (2000, 1)]):
        # the model's own keys (task, optimizer, model.*) do not split: one row per model
        assert sorted(row.model for row in table.rows) == sorted(MIXED[(users, epochs)])
        for row in table.rows:
            assert {run.record["config"]["data"]["replica"]["n_users"] for run in row.runs} == {users}
            assert {run.record["config"]["trainer"]["max_epochs"] for run in row.runs} == {epochs}
            assert row.label == row.model  # nothing in a table left to tell a model's rows apart
        # paired tests: against the table's own reference (best validation), on its own seeds only
        assert table.reference in table.rows
        reference = MIXED[(users, epochs)][table.reference.model]
        for row in table.rows:
            if row is table.reference:
                assert row.paired == {}
                continue
            mine = MIXED[(users, epochs)][row.model]
            expected = R.paired_t_test({s: a for s, (a, _) in mine.items()}, {s: a for s, (a, _) in reference.items()})
            assert row.paired["test/auc/mean"] == expected
    first, _, large = tables
    assert first.reference.model == "mmoe" and large.reference.model == "ple"  # each table's best validation
    a2gen = next(row for row in first.rows if row.model == "a2gen")
    assert a2gen.paired["test/auc/mean"].delta == pytest.approx((0.71 - 0.70 + 0.69 - 0.72) / 2)


def test_same_settings_on_other_data_files_are_another_table(tmp_path):
    """A changed replica generator: same settings, another dataset fingerprint, so other rows."""
    old, new = make_record("mmoe", 1, 0.7, 0.7), make_record("mmoe", 1, 0.6, 0.6)
    new["dataset_fingerprint"] = "a" * 20
    write_records(tmp_path, [old, new])
    tables = R.build_tables(R.find_runs([tmp_path]))
    assert sorted(t.heading for t in tables) == ["data=tmall, data files=aaaaaa", "data=tmall, data files=ffffff"]


def arm_record(arm: str, seconds: int, digest: str | None, fingerprint: str) -> dict:
    record = make_record("moment_cross", 1, 0.7 + seconds / 1e5, 0.7, data="kuailive",
                         config_changes={"data.stream": "moment", "data.moment_seconds": seconds})
    record.update(overrides=[f"arm={arm}", "seed=1"], dataset_fingerprint=fingerprint, test_digest=digest)
    return record


def test_arms_tested_on_the_same_samples_share_a_table_whatever_their_training_data(tmp_path):
    """Moment&Cross on 30-s and 1-h streams: other training rows (other fingerprints), the same test samples
    (the same digest), so one table with a row per arm; another test digest, or no digest, splits."""
    write_records(tmp_path / "same", [arm_record("moment_cross_30s", 30, "d" * 16, "a" * 20),
                                      arm_record("moment_cross_3600s", 3600, "d" * 16, "b" * 20)])
    [table] = R.build_tables(R.find_runs([tmp_path / "same"]))
    assert len(table.rows) == 2 and any("3600" in row.label for row in table.rows)
    write_records(tmp_path / "other", [arm_record("moment_cross_30s", 30, "d" * 16, "a" * 20),
                                       arm_record("moment_cross_3600s", 3600, "e" * 16, "b" * 20)])
    assert len(R.build_tables(R.find_runs([tmp_path / "other"]))) == 2
    write_records(tmp_path / "old", [arm_record("moment_cross_30s", 30, None, "a" * 20),
                                     arm_record("moment_cross_3600s", 3600, None, "b" * 20)])
    assert len(R.build_tables(R.find_runs([tmp_path / "old"]))) == 2  # no digest: the fingerprints decide


def test_markdown_heads_each_table_by_what_it_fixes(mixed_runs, tmp_path, capsys):
    done = run_report(capsys, str(mixed_runs), "--out", str(tmp_path / "out"), "--format", "md,csv,json", "--no-plots")
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## data=")]
    assert headings[0] == ("## data=tmall, data.replica.n_users=600, trainer.max_epochs=1 · synthetic data · "
                           "selected on valid/auc/mean") and len(headings) == 3
    small = md.split(headings[0])[1].split(headings[1])[0]
    assert "vs mmoe |" in small and "ple (" not in small  # compared with its own mmoe, no label of another table
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert [t["fixed"] for t in board["tables"]] == [
        {"data.replica.n_users": "600", "trainer.max_epochs": "1"},
        {"data.replica.n_users": "600", "trainer.max_epochs": "6"},
        {"data.replica.n_users": "2000", "trainer.max_epochs": "1"}]
    lines = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    assert {line["table"] for line in lines} == {t["heading"] for t in board["tables"]}


def test_a_metric_only_one_model_reports_is_not_marked_best(mixed_runs, tmp_path, capsys):
    table = R.build_tables(R.find_runs([mixed_runs]))[0]
    assert table.models_with("test/exact_match/sequence") == {"a2gen"}
    assert math.isnan(table.best("test/exact_match/sequence"))
    assert table.best("test/auc/mean") == pytest.approx(0.71)  # three models report it: marked
    done = run_report(capsys, str(mixed_runs), "--out", str(tmp_path), "--format", "md,html", "--no-plots")
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "leaderboard.md").read_text().split("## data=")[1]
    header = next(line for line in md.splitlines() if line.startswith("| model |")).split(" | ")
    column = header.index("exact_match/sequence ↑")
    a2gen = next(line for line in md.splitlines() if line.startswith("| a2gen |")).split(" | ")
    assert a2gen[column] == "0.3150 ± 0.0635"  # not bold: a2gen alone has it
    mmoe = next(line for line in md.splitlines() if line.startswith("| mmoe |")).split(" | ")
    assert mmoe[header.index("auc/mean ↑")].startswith("**0.7100 ± ")  # mean of 0.70, 0.72: the best
    html = (tmp_path / "leaderboard.html").read_text()
    assert html.count("class=\"best\">0.3150") == 0 and html.count(">0.3150 <span") >= 1


def test_loss_curves_get_one_panel_per_loss_quantity(mixed_runs):
    from recbench.report.plots import _loss_groups

    table = R.build_tables(R.find_runs([mixed_runs]))[0]
    groups = {title: sorted(row.model for row in rows) for title, rows in _loss_groups(table)}
    assert groups == {"train/loss (epoch mean), task action_generation": ["a2gen"],
                      "train/loss (epoch mean), task actions": ["mmoe", "ple"]}


def tag(record: dict, tags) -> dict:
    record["config"]["tags"] = tags
    return record


def test_tags_keep_the_runs_with_any_of_them(tmp_path, capsys):
    records = [tag(make_record("mmoe", 1, 0.7, 0.7), ["issue21", "small"]),
               tag(make_record("ple", 1, 0.6, 0.6), "issue21"),  # `tags=issue21`: a string
               tag(make_record("a2gen", 1, 0.8, 0.8), ["other"]), make_record("dcn", 1, 0.5, 0.5)]
    write_records(tmp_path / "runs", records)
    failed = tmp_path / "runs" / "9_din_seed1"  # a failed record has no config: its tags come from .hydra
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("seed: 1\ntags: [small]\n")
    (failed / "results.json").write_text(json.dumps({"status": "failed", "model": "din", "data": "tmall", "seed": 1,
                                                     "error": "boom"}))
    done = run_report(capsys, str(tmp_path / "runs"), "--tags", "small,nothing", "--out", str(tmp_path / "a"),
                      "--format", "json,md", "--no-plots")
    assert done.returncode == 0, done.stderr
    board = json.loads((tmp_path / "a" / "leaderboard.json").read_text())
    assert [r["model"] for t in board["tables"] for r in t["rows"]] == ["mmoe"]
    assert board["tags"] == ["small", "nothing"]
    assert [r["model"] for r in board["runs_without_results"]] == ["din"]
    assert "with any of the tags small, nothing" in (tmp_path / "a" / "leaderboard.md").read_text()
    done = run_report(capsys, str(tmp_path / "runs"), "--tags", "issue21", "--out", str(tmp_path / "b"), "--format",
                      "json", "--no-plots")
    assert done.returncode == 0, done.stderr
    board = json.loads((tmp_path / "b" / "leaderboard.json").read_text())
    assert sorted(r["model"] for t in board["tables"] for r in t["rows"]) == ["mmoe", "ple"]
    assert board["runs_without_results"] == []
    done = run_report(capsys, str(tmp_path / "runs"), "--tags", "nope", "--format", "json", "--no-plots")
    assert done.returncode == 2 and "tags found: issue21, other, small" in done.stderr
    # tags are labels, not settings: tagged and untagged runs of one config share a row
    assert "tags" in R.NON_SEMANTIC and "tags" not in R.semantic_config(records[0])


def test_runs_are_linked_relative_to_the_leaderboard(toy_runs, tmp_path, capsys):
    import re

    out = tmp_path / "site" / "board"
    done = run_report(capsys, str(toy_runs), "--out", str(out), "--format", "md,html", "--no-plots")
    assert done.returncode == 0, done.stderr
    html = (out / "leaderboard.html").read_text()
    links = re.findall(r'href="([^"]+)"', html)
    runs = [link for link in links if "seed" in link]
    assert "../../runs/0_a2gen_seed1/" in runs and "../../runs/0_a2gen_seed1/results.json" in runs
    assert len([link for link in runs if link.endswith("/results.json")]) == 9  # every counted run
    md_links = re.findall(r"\]\(([^)]+)\)", (out / "leaderboard.md").read_text())
    for link in runs + [link for link in md_links if "seed" in link]:
        assert not link.startswith(("/", "file:")) and (out / link).exists(), link  # relative, and it resolves
    assert len([link for link in md_links if link.endswith("results.json")]) == 9


# --- the command -------------------------------------------------------------------------------------


def run_report(capsys, *args: str) -> subprocess.CompletedProcess:
    """`python -m recbench.report ARGS` in this process (the sweep test runs the real command)."""
    code = R.main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_failed_and_unfinished_runs_are_listed_not_dropped(toy_runs, tmp_path, capsys):
    failed = make_record("ple", 4, 0.0, 0.0)
    failed = {k: failed[k] for k in ("model", "data", "task", "seed", "run_dir")}
    failed.update(status="failed", error="KeyError: 'action_logit'")
    write_records(toy_runs / "more", [failed])
    running = toy_runs / "9_mmoe_seed5"
    (running / ".hydra").mkdir(parents=True)
    (running / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  job:\n    config_name: config\n  runtime:\n    choices:\n      model: mmoe\n      data: tmall\n")
    (running / ".hydra" / "overrides.yaml").write_text("- model=mmoe\n- seed=5\n")
    (toy_runs / "broken").mkdir()
    (toy_runs / "broken" / "results.json").write_text('{"status": "fini')
    text_stage = toy_runs / "text_run"  # another entry point's run folder: not a training run
    (text_stage / ".hydra").mkdir(parents=True)
    (text_stage / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  job:\n    config_name: text_stage\n  runtime:\n    choices: {}\n")

    done = run_report(capsys, str(toy_runs), "--out", str(tmp_path / "out"), "--format", "md,csv,json", "--no-plots")
    assert done.returncode == 0, done.stderr
    assert "3 runs without results" in done.stdout
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    missing = {(r["model"], r["status"]) for r in board["runs_without_results"]}
    assert missing == {("ple", "failed"), ("mmoe", "no record"), (None, "unreadable")}
    failed_row = next(r for r in board["runs_without_results"] if r["status"] == "failed")
    assert failed_row["error"] == "KeyError: 'action_logit'" and failed_row["seed"] == 4
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## Runs without results" in md and "KeyError: 'action_logit'" in md and "still running" in md
    lines = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    assert {line["status"] for line in lines} == {"finished", "failed", "no record", "unreadable"}


def test_machine_formats_carry_the_numbers(toy_runs, tmp_path, capsys):
    done = run_report(capsys, str(toy_runs), "--out", str(tmp_path), "--format", "csv,json")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "leaderboard.md").exists() and not (tmp_path / "leaderboard.html").exists()
    lines = [line for line in csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text()))
             if line["metric"] == "test/auc/mean"]
    by_model = {line["model"]: line for line in lines}
    values = [a for a, _ in TOY["ple"].values()]
    assert float(by_model["ple"]["mean"]) == pytest.approx(np.mean(values), abs=1e-15)
    assert float(by_model["ple"]["ci95"]) == pytest.approx(T975[2] * np.std(values, ddof=1) / math.sqrt(3), rel=1e-7)
    assert by_model["ple"]["n"] == "3" and by_model["ple"]["seeds"] == "1 2 3"
    assert by_model["mmoe"]["p_value"] == "" and by_model["a2gen"]["reference"] == "mmoe"
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    (table,) = board["tables"]
    row = next(r for r in table["rows"] if r["model"] == "a2gen")
    assert row["metrics"]["test/auc/mean"]["values"] == {"1": 0.75, "2": 0.70, "3": 0.80}
    assert row["paired_vs_reference"]["test/auc/mean"]["n_pairs"] == 3 and table["reference"] == "mmoe"
    assert "95% confidence interval" in board["definitions"]["mean ± CI"]


@pytest.mark.parametrize("case", ["empty", "missing", "format"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case, capsys):
    (tmp_path / "empty").mkdir()
    args = {"empty": [str(tmp_path / "empty")], "missing": [str(tmp_path / "nope")],
            "format": [str(tmp_path / "empty"), "--format", "pdf"]}[case]
    done = run_report(capsys, *args)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("recbench: error:") and "Fix:" in lines[0], done.stderr
    assert not list((tmp_path / "empty").iterdir())


# --- the page in a browser ---------------------------------------------------------------------------


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium() -> str:
    """The Chromium binary. The test set-up installs the Debian packages when it can (root with
    apt-get, as in CI); where it cannot, the test fails under CI and skips elsewhere, saying why."""
    if not _find_chromium() and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], capture_output=True,
                       env=env, timeout=1200)
    found = _find_chromium()
    if found:
        return found
    message = "Chromium not installed and not installable here (Debian: apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def headless(browser: str, url: str, *flags: str) -> list[str]:
    """Run headless Chromium on url; return the page's console messages (from Chromium's stderr log)."""
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *flags, url],
                          capture_output=True, text=True, timeout=120)
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_html_renders_in_headless_chromium_without_console_errors(toy_runs, tmp_path, capsys):
    if importlib.util.find_spec("matplotlib") is None:  # a core dependency; CI must have it
        (pytest.fail if os.environ.get("CI") else pytest.skip)("plots need matplotlib (pip install matplotlib)")
    browser = chromium()
    done = run_report(capsys, str(toy_runs), "--out", str(tmp_path / "board"))
    assert done.returncode == 0, done.stderr
    page = tmp_path / "board" / "leaderboard.html"
    text = page.read_text()
    assert "src=\"http" not in text and "href=\"http" not in text  # self-contained: nothing fetched
    assert text.count('src="data:image/png;base64,') == 2  # bars + curves, inlined
    assert sorted(p.name for p in (tmp_path / "board" / "leaderboard_files").iterdir()) == [
        "tmall-synthetic-auc-mean_bars.png", "tmall-synthetic-auc-mean_curves.png"]
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "(leaderboard_files/tmall-synthetic-auc-mean_bars.png)" in md and "**0.7500 ± " in md

    # the report alone: a screenshot, and no console message at all
    artifacts = Path(os.environ.get("RECBENCH_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "leaderboard_screenshot.png"
    console = headless(browser, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400")
    assert console == [], console
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    # a wrapper page frames the report: every image decodes, the rows are there, and the console capture
    # works (its own deliberate error is caught, so an empty console above is not a vacuous pass)
    wrapper = tmp_path / "check.html"
    wrapper.write_text(f"""<html><body><iframe id="f" src="{page.as_uri()}"></iframe><script>
console.error("recbench-probe");
document.getElementById("f").addEventListener("load", () => {{
  const doc = document.getElementById("f").contentDocument;
  const images = Array.from(doc.images);
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const rows = doc.querySelectorAll("tbody tr").length;
  console.log("CHECK images=" + images.length + " decoded=" + decoded + " rows=" + rows);
}});</script></body></html>""")
    console = headless(browser, wrapper.as_uri(), "--allow-file-access-from-files", "--dump-dom")
    assert any("recbench-probe" in line for line in console), console
    assert any('"CHECK images=2 decoded=2 rows=' in line for line in console), console
    assert not [line for line in console if "leaderboard.html" in line], console  # nothing from the report


def test_html_fits_1280_px_without_a_horizontal_scrollbar(live_runs, tmp_path, capsys):
    """The kuailive table (model, 4 metrics, 2 Δ, time, samples/s, parameters) and its per-day table, every
    <details> opened, in a 1280 px frame: nothing wider than the frame, no table scrolled sideways."""
    browser = chromium()
    done = run_report(capsys, str(live_runs), "--out", str(tmp_path / "board"), "--format", "html", "--no-plots")
    assert done.returncode == 0, done.stderr
    page = tmp_path / "board" / "leaderboard.html"
    wrapper = tmp_path / "fit.html"
    wrapper.write_text(f"""<html><body style="margin:0"><iframe id="f" style="width:1280px;height:900px;border:0"
src="{page.as_uri()}"></iframe><script>
document.getElementById("f").addEventListener("load", () => {{
  const doc = document.getElementById("f").contentDocument;
  doc.querySelectorAll("details").forEach(d => d.open = true);
  const wide = Array.from(doc.querySelectorAll(".scroll")).filter(d => d.scrollWidth > d.clientWidth + 1);
  const columns = doc.querySelector("table").querySelectorAll("thead th").length;
  console.log("FIT page=" + doc.documentElement.scrollWidth + " view=" + doc.documentElement.clientWidth
              + " wide=" + wide.length + " columns=" + columns);
}});</script></body></html>""")
    console = headless(browser, wrapper.as_uri(), "--allow-file-access-from-files", "--dump-dom")
    line = next((line for line in console if '"FIT ' in line), None)
    assert line is not None, console
    fit = dict(item.split("=") for item in line.split('"FIT ')[1].split('"')[0].split())
    assert int(fit["columns"]) == 10 and int(fit["wide"]) == 0 and int(fit["page"]) <= int(fit["view"]), line


# --- progressive validation (metrics.progressive, progressive_curve) ---------------------------------

PROGRESSIVE = {  # model -> seed -> progressive/auc/mean over the training stream
    "a2gen": {1: 0.68, 2: 0.66, 3: 0.71},
    "mmoe": {1: 0.65, 2: 0.65, 3: 0.67},
    "ple": {1: 0.66, 2: 0.64, 3: 0.69},
}
DAYS = [(1746460800000, "2025-05-06"), (1746547200000, "2025-05-07"), (1746633600000, "2025-05-08")]
DAY_OFFSET = (-0.02, 0.0, 0.02)  # the curve of a run: its progressive auc + this, per day


def with_progressive(record: dict, auc: float, *, missing_day: int | None = None) -> dict:
    """A record as a live-stream run writes it: progressive metrics plus the per-day curve (buckets in
    reverse order, so the report must sort them by start; `missing_day` has no positive: NaN)."""
    record["metrics"]["progressive"] = {"progressive/auc/mean": auc, "progressive/logloss/mean": 1 - auc}
    record["progressive_curve"] = [
        {"start": start, "label": label, "rows": 100,
         "progressive/auc/mean": math.nan if i == missing_day else auc + DAY_OFFSET[i],
         "progressive/gauc/click": 0.5}
        for i, (start, label) in reversed(list(enumerate(DAYS)))]
    return record


@pytest.fixture()
def live_runs(tmp_path) -> Path:
    """The toy runs on `kuailive` with progressive metrics (ple seed 2 has no positive on the first day),
    beside the plain tmall toy runs."""
    records = [make_record(m, s, a, v, mae=0.1 * s) for m, seeds in TOY.items() for s, (a, v) in seeds.items()]
    records += [with_progressive(make_record(m, s, a, v, mae=0.1 * s, data="kuailive"), PROGRESSIVE[m][s],
                                 missing_day=0 if (m, s) == ("ple", 2) else None)
                for m, seeds in TOY.items() for s, (a, v) in seeds.items()]
    write_records(tmp_path / "live", records)
    return tmp_path / "live"


def test_progressive_metrics_are_columns_with_the_same_statistics(live_runs, tmp_path, capsys):
    live, plain = R.build_tables(R.find_runs([live_runs]))  # tables sorted by data: kuailive, tmall
    assert live.has_progressive and not plain.has_progressive and live.progressive_primary == "progressive/auc/mean"
    assert live.headline_metrics() == ["test/auc/mean", "test/time_mae/mean", "progressive/auc/mean",
                                       "progressive/logloss/mean"]
    assert live.direction("progressive/logloss/mean") == "min" and live.direction("progressive/auc/mean") == "max"
    assert R.lower_is_better("progressive/time_mae/mean") and not R.lower_is_better("progressive/auc/mean")
    rows = {row.model: row for row in live.rows}
    assert live.reference is rows["mmoe"]  # the same reference row as for the test metrics
    for model, seeds in PROGRESSIVE.items():
        stat = rows[model].metrics["progressive/auc/mean"]
        assert stat.values == pytest.approx(seeds)  # the same seeds as the test metrics
        assert stat.ci95 == pytest.approx(T975[2] * np.std(list(seeds.values()), ddof=1) / math.sqrt(3), rel=1e-7)
    # a2gen - mmoe per seed: 0.03, 0.01, 0.04 -> t = mean / (sd / sqrt 3); p at df=2: 1 - t / sqrt(t^2 + 2)
    d = np.array([0.03, 0.01, 0.04])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    paired = rows["a2gen"].paired["progressive/auc/mean"]
    assert paired.n == 3 and paired.delta == pytest.approx(d.mean()) and paired.p == pytest.approx(
        1 - t / math.sqrt(t * t + 2), rel=1e-9)

    done = run_report(capsys, str(live_runs), "--out", str(tmp_path / "out"), "--format", "md,html,csv,json",
                      "--no-plots")
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    live_md = md.split("## data=kuailive")[1].split("## data=tmall")[0]
    assert "test (fixed days)" in live_md and "progressive (training stream)" in live_md
    header = next(line for line in live_md.splitlines() if line.startswith("| model |"))
    assert ("| test/auc/mean ↑ | test/time_mae/mean ↓ | progressive/auc/mean ↑ | progressive/logloss/mean ↓ | "
            "Δ test/auc/mean vs mmoe | Δ progressive/auc/mean vs mmoe |") in header
    a2gen = next(line for line in live_md.splitlines() if line.startswith("| a2gen |"))
    assert f"**{R.fmt_stat(rows['a2gen'].metrics['progressive/auc/mean'])}**" in a2gen  # the best column mean
    assert R.fmt_paired(rows["a2gen"], live, "progressive/auc/mean") in a2gen
    assert f"({R.fmt_p(paired.p)}, n=3)" in a2gen
    html = (tmp_path / "out" / "leaderboard.html").read_text().replace("<wbr>", "")  # headers' wrap points
    assert "progressive/auc/mean ↑" in html and "progressive (training stream)" in html
    lines = [line for line in csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text()))
             if line["metric"] == "progressive/auc/mean"]
    assert {line["data"] for line in lines} == {"kuailive"}
    a2gen_csv = next(line for line in lines if line["model"] == "a2gen")
    assert float(a2gen_csv["mean"]) == pytest.approx(np.mean([0.68, 0.66, 0.71]))
    assert float(a2gen_csv["p_value"]) == pytest.approx(paired.p) and a2gen_csv["direction"] == "max"
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    row = next(r for t in board["tables"] if t["data"] == "kuailive" for r in t["rows"] if r["model"] == "a2gen")
    assert row["paired_vs_reference"]["progressive/auc/mean"]["p"] == pytest.approx(paired.p)


def test_tables_without_progressive_render_as_before(live_runs, toy_runs, tmp_path, capsys):
    done = run_report(capsys, str(toy_runs), "--out", str(tmp_path / "plain"), "--format", "md,html,json",
                      "--no-plots")
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "plain" / "leaderboard.md").read_text()
    html = (tmp_path / "plain" / "leaderboard.html").read_text()
    assert "progressive" not in md and "progressive" not in html
    header = ("| model | role | task | seeds | auc/mean ↑ | time_mae/mean ↓ | Δ auc/mean vs mmoe | train s | "
              "samples/s | parameters |")
    assert header in md.splitlines() and "All test metrics" in html
    (table,) = json.loads((tmp_path / "plain" / "leaderboard.json").read_text())["tables"]
    assert "progressive_curve" not in table
    # beside a table with progressive metrics, the plain table is the same
    done = run_report(capsys, str(live_runs), "--out", str(tmp_path / "mixed"), "--format", "md", "--no-plots")
    assert done.returncode == 0, done.stderr
    mixed = (tmp_path / "mixed" / "leaderboard.md").read_text().replace("../live/", "../runs/")  # runs' folders
    section = "## data=tmall"
    assert mixed.split(section)[1].split("## Definitions")[0] == md.split(section)[1].split("## Definitions")[0]


def test_progressive_curve_table_has_the_means(live_runs, tmp_path, capsys):
    live, plain = R.build_tables(R.find_runs([live_runs]))
    assert live.curve_metric == "progressive/auc/mean" and plain.curve_metric is None
    labels, means = live.curve_means("progressive/auc/mean")
    assert labels == [label for _, label in DAYS]  # time order, though each record lists them backwards
    expected = {m: [np.mean([auc + offset for s, auc in seeds.items() if (m, s, i) != ("ple", 2, 0)])
                    for i, offset in enumerate(DAY_OFFSET)] for m, seeds in PROGRESSIVE.items()}
    got = {row.model: row_means for row, row_means in zip(live.rows, means)}
    assert got.keys() == expected.keys()
    for model, values in expected.items():  # pytest.approx compares flat containers only
        assert got[model] == pytest.approx(values), model
    assert expected["ple"][0] == pytest.approx((0.66 + 0.69) / 2 - 0.02)  # the NaN bucket is left out

    done = run_report(capsys, str(live_runs), "--out", str(tmp_path), "--format", "md,json", "--no-plots")
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "leaderboard.md").read_text().splitlines()
    assert "| model | 2025-05-06 | 2025-05-07 | 2025-05-08 |" in md
    assert "| ple | " + " | ".join(R.fmt(v) for v in expected["ple"]) + " |" in md
    curve = next(t for t in json.loads((tmp_path / "leaderboard.json").read_text())["tables"]
                 if t["data"] == "kuailive")["progressive_curve"]
    assert curve["metric"] == "progressive/auc/mean" and curve["labels"] == labels
    written = {r["label"]: r["means"] for r in curve["rows"]}
    assert written.keys() == expected.keys()
    assert all(written[model] == pytest.approx(values) for model, values in expected.items())


def test_curve_metric_falls_back_to_the_first_progressive_metric(tmp_path):
    record = with_progressive(make_record("mmoe", 1, 0.7, 0.7), 0.6)
    for bucket in record["progressive_curve"]:
        del bucket["progressive/auc/mean"]  # no counterpart of valid/auc/mean in the curve
        bucket["progressive/auc/click"] = None  # sorts first, but no value at all: never the curve's metric
    record["progressive_curve"][-1]["progressive/gauc/click"] = math.nan  # the first day: no positive
    write_records(tmp_path, [record])
    (table,) = R.build_tables(R.find_runs([tmp_path]))
    assert table.progressive_primary == "progressive/auc/mean" and table.curve_metric == "progressive/gauc/click"
    labels, means = table.curve_means("progressive/gauc/click")
    assert labels == [label for _, label in DAYS] and means == [pytest.approx([math.nan, 0.5, 0.5], nan_ok=True)]


def test_progressive_plot_is_drawn_and_linked(live_runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    live, plain = R.build_tables(R.find_runs([live_runs]))
    png = R.plot_progressive(live)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert R.plot_progressive(plain) is None  # no curve: no plot
    done = run_report(capsys, str(live_runs), "--out", str(tmp_path), "--format", "md,html")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "leaderboard_files").iterdir()) == [
        "kuailive-synthetic-auc-mean_bars.png", "kuailive-synthetic-auc-mean_curves.png",
        "kuailive-synthetic-auc-mean_progressive.png", "tmall-synthetic-auc-mean_bars.png",
        "tmall-synthetic-auc-mean_curves.png"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "(leaderboard_files/kuailive-synthetic-auc-mean_progressive.png)" in md
    assert (tmp_path / "leaderboard.html").read_text().count('src="data:image/png;base64,') == 5


def test_a_named_reference_row_is_compared_against(live_runs, capsys):
    tables = R.build_tables(R.find_runs([live_runs]), reference="mmoe")
    live = next(table for table in tables if table.reference is not None and table.reference.label == "mmoe")
    assert all("test/auc/mean" in row.paired for row in live.rows if row.label != "mmoe")
    done = run_report(capsys, str(live_runs), "--reference", "no such row", "--format", "md", "--no-plots")
    assert done.returncode == 2 and "--reference 'no such row'" in done.stderr and "Fix: use one of" in done.stderr
