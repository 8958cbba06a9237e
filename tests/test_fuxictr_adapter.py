"""`data=fuxictr`: a FuxiCTR dataset config read as FuxiCTR users write it (recbench/data/fuxictr.py).

The fixture (tests/data/fuxictr/) is hand-written in the style of FuxiCTR's tiny_data.yaml: 8 training,
3 validation and 4 test rows, so every expected index below is worked out by hand from FuxiCTR's
rules (vocabularies from the training files, min_categr_count, sequence tokens merged into the
shared field's vocabulary, OOV last, truncation on the padding side, normalisers fitted on train).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import recbench.config  # noqa: F401  (registers the resolvers conf/ uses)
from recbench.__main__ import CONF_DIR, build
from recbench.data.datamodule import RecDataModule
from recbench.data.fuxictr import FuxiCTRAdapter, first_label
from recbench.errors import UserInputError
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "data" / "fuxictr"
CONFIG = FIXTURE / "dataset_config.yaml"
TINY_REPLICA = {"n_users": 40, "n_items": 160, "n_rows": 1200}


def adapter(tmp_path: Path, config: Path | str | None = CONFIG, dataset_id: str | None = "tiny_seq",
            **overrides) -> FuxiCTRAdapter:
    settings = dict(source="auto", config=None if config is None else str(config), dataset_id=dataset_id,
                    cache_dir=str(tmp_path / "cache"), replica_dir=str(tmp_path / "synthetic"), group_id=None,
                    ctr_label=None, history_fields=None, replica=TINY_REPLICA, use_cache=False)
    settings.update(overrides)
    return FuxiCTRAdapter(**settings)


def prepared(tmp_path: Path, **kwargs):
    return adapter(tmp_path, **kwargs).prepare()


def copy_fixture(tmp_path: Path) -> Path:
    """A writable copy of the fixture folder; returns its config path."""
    target = tmp_path / "fx"
    shutil.copytree(FIXTURE, target)
    return target / "dataset_config.yaml"


def edit_csv(path: Path, line: int, column: str, value: str) -> None:
    """Set `column` on 1-based file `line` (line 1 is the header) of a small CSV file."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------- what is built
def test_vocabularies_follow_fuxictr_min_count_order_oov_and_share_embedding(tmp_path):
    data = prepared(tmp_path)
    spec, arrays = data.meta["spec"], data.arrays
    assert spec["user_fields"] == ["userid", "pid"] and spec["item_fields"] == ["adgroup_id", "cate_id"]
    assert spec["history_fields"] == ["adgroup_id", "cate_id"] and spec["tasks"] == ["clk"]
    assert spec["numeric_fields"] == ["price", "age"] and spec["history_length"] == 4
    # userid (min 2): u1 and u2 seen 3 times (tie: token order), u3 twice -> 1, 2, 3; u9 (test only) -> OOV 4
    assert arrays["cat_0"].tolist() == [1, 1, 2, 2, 3, 3, 1, 2] + [1, 3, 2] + [4, 1, 2, 3]
    # pid, dtype int, own min_categr_count 1: ascending ids (3 is the most frequent, still index 3); 9 -> OOV
    assert arrays["cat_1"].tolist() == [3, 2, 3, 1, 3, 2, 3, 2] + [3, 2, 1] + [3, 3, 2, 4]
    # adgroup_id (min 2): a1 (4x) 1, a2 (2x) 2; a3, a4 once -> OOV; click_sequence adds a5 (2x in train
    # histories; a9 once is left out) -> 3; OOV 4
    assert arrays["cat_2"].tolist() == [1, 2, 1, 4, 1, 2, 4, 1] + [1, 3, 2] + [4, 4, 4, 1]
    # cate_id: c1 1, c2 2; cate_sequence adds c3 (1x as a target, 3x in histories) -> 3; c4 (test) -> OOV 4
    assert arrays["cat_3"].tolist() == [1, 1, 1, 2, 2, 1, 3, 1] + [1, 3, 2] + [1, 1, 2, 4]
    assert spec["cardinalities"] == {"userid": 5, "pid": 5, "adgroup_id": 5, "cate_id": 5}
    assert data.meta["stats"]["group_id"] == "userid"  # source: user
    assert arrays["group"].tolist() == [1, 1, 2, 2, 3, 3, 1, 2, 1, 3, 2, 4, 1, 2, 3]
    assert arrays["label_0"].tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0]
    assert [arrays[f"{s}_rows"].tolist() for s in ("train", "valid", "test")] == [
        list(range(8)), [8, 9, 10], [11, 12, 13, 14]]


def test_sequences_pad_and_truncate_on_the_padding_side_as_fuxictr(tmp_path, capsys):
    data = prepared(tmp_path)
    history = data.arrays["seq_0"]  # click_sequence, max_len 4, padding pre: the LAST 4 tokens, right-aligned
    assert history[0].tolist() == [0, 0, 0, 0]          # empty cell
    assert history[2].tolist() == [0, 0, 1, 2]          # a1^a2
    assert history[4].tolist() == [0, 0, 0, 4]          # a9: below min_categr_count -> OOV, still a token
    assert history[6].tolist() == [2, 4, 4, 3]          # a1^a2^a3^a4^a5 -> a2 a3 a4 a5
    assert history[13].tolist() == [4, 4, 3, 1]         # 6 tokens (test) -> a3 a4 a5 a1
    assert data.arrays["hist_mask"][4].tolist() == [False, False, False, True]
    assert data.arrays["hist_mask"][13].all() and not data.arrays["hist_mask"][0].any()
    assert data.meta["stats"]["truncated_sequences"]["click_sequence"] == {"train": 1, "valid": 0, "test": 1}
    assert "truncated as FuxiCTR does" in capsys.readouterr().err
    # padding post (tiny_mt): the FIRST 4 tokens, left-aligned
    post = prepared(tmp_path, dataset_id="tiny_mt").arrays["seq_0"]
    assert post[6].tolist() == [1, 2, 4, 4] and post[2].tolist() == [1, 2, 0, 0]
    assert post[13].tolist() == [1, 2, 4, 4]


def test_numeric_features_are_filled_and_normalised_with_training_statistics(tmp_path):
    data = prepared(tmp_path)
    numeric, stats = data.arrays["numeric"], data.meta["stats"]["normalizers"]
    assert stats["price"] == pytest.approx({"kind": "StandardScaler", "mean": 30.0, "std": 300 ** 0.5})
    assert stats["age"] == {"kind": "MinMaxScaler", "min": 20.0, "max": 60.0}
    assert numeric[:, 0] == pytest.approx((np.array([10, 20, 30, 40, 50, 60, 10, 20, 30, 20, 40, 1000, 30, 20, 30])
                                           - 30) / 300 ** 0.5, rel=1e-6)
    assert numeric[1, 1] == pytest.approx(0.25)  # an empty age is fill_na 30 -> (30 - 20) / 40


def test_later_splits_never_reach_training_vocabularies_or_statistics(tmp_path):
    """Adversarial: flood validation and test with tokens seen once (or never) in training, extreme
    prices and other labels; nothing about the training rows or the spec may change."""
    clean = prepared(tmp_path / "clean")
    config = copy_fixture(tmp_path)
    header = (config.parent / "tiny_seq" / "test.csv").read_text().splitlines()[0]
    poison = [f"u9,a3,c3,7,{10 ** 6},99,a3^a4^a9^a9,c3^c9,r{i},1,1" for i in range(40)]
    for split in ("valid", "test"):
        (config.parent / "tiny_seq" / f"{split}.csv").write_text("\n".join([header, *poison]) + "\n")
    flooded = prepared(tmp_path / "flooded", config=config)
    spec_keys = ("cardinalities", "user_fields", "item_fields", "history_fields", "history_length", "numeric_fields")
    assert {k: flooded.meta["spec"][k] for k in spec_keys} == {k: clean.meta["spec"][k] for k in spec_keys}
    assert flooded.meta["stats"]["normalizers"] == clean.meta["stats"]["normalizers"]
    for name in ("cat_0", "cat_1", "cat_2", "cat_3", "seq_0", "seq_1", "numeric", "label_0"):
        assert np.array_equal(flooded.arrays[name][:8], clean.arrays[name][:8]), name
    # a3 (once in training) stays OOV though the later splits hold it 120 times; so do u9, pid 7, a9
    test_rows = flooded.arrays["test_rows"]
    assert set(flooded.arrays["cat_2"][test_rows]) == {4} and set(flooded.arrays["cat_0"][test_rows]) == {4}
    assert set(flooded.arrays["cat_1"][test_rows]) == {4}
    assert flooded.arrays["seq_0"][test_rows[0]].tolist() == [4, 4, 4, 4]


def test_several_label_columns_are_several_tasks(tmp_path):
    data = prepared(tmp_path, dataset_id="tiny_mt")
    assert data.meta["spec"]["tasks"] == ["clk", "buy"]
    assert data.arrays["label_1"].tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1]
    assert data.meta["spec"]["history_fields"] == ["adgroup_id"] and data.meta["spec"]["numeric_fields"] == ["price"]
    assert data.meta["stats"]["positive_rate"]["buy"]["test"] == pytest.approx(0.5)


def test_a_parquet_copy_with_list_sequences_gives_the_same_arrays(tmp_path):
    config = copy_fixture(tmp_path)
    folder = config.parent / "tiny_seq"
    for split in ("train", "valid", "test"):
        frame = pl.read_csv(folder / f"{split}.csv", infer_schema=False)
        frame = frame.with_columns(pl.col("click_sequence").fill_null("").str.split("^"),
                                   pl.col("pid").cast(pl.Int64), pl.col("price").cast(pl.Float64))
        frame.write_parquet(folder / f"{split}.parquet")
    config.write_text(config.read_text().replace("data_format: csv", "data_format: parquet")
                      .replace(".csv", ".parquet"))
    csv, parquet = prepared(tmp_path / "a"), prepared(tmp_path / "b", config=config)
    assert csv.arrays.keys() == parquet.arrays.keys()
    for name, values in csv.arrays.items():
        assert np.array_equal(values, parquet.arrays[name]), name


def test_relative_data_paths_start_at_the_config_folder_then_the_working_directory(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # ./tiny_seq/... is not here: found next to the config
    assert prepared(tmp_path / "a").meta["stats"]["rows"] == {"train": 8, "valid": 3, "test": 4}
    # a config whose paths only exist under the working directory
    shutil.copytree(FIXTURE / "tiny_seq", elsewhere / "data" / "tiny_seq")
    configs = tmp_path / "configs"
    configs.mkdir()
    text = CONFIG.read_text().replace("./tiny_seq/", "data/tiny_seq/")
    (configs / "dataset_config.yaml").write_text(text)
    assert prepared(tmp_path / "b", config=configs).meta["stats"]["rows"]["test"] == 4  # a folder as data.config
    # neither: one line naming both places
    (configs / "dataset_config.yaml").write_text(text.replace("data/tiny_seq/test.csv", "data/nowhere/test.csv"))
    with pytest.raises(UserInputError) as missing:
        prepared(tmp_path / "c", config=configs)
    message = str(missing.value)
    assert "\n" not in message and "test_data 'data/nowhere/test.csv' not found" in message and "Fix:" in message
    assert str(configs / "data/nowhere/test.csv") in message and str(elsewhere / "data/nowhere/test.csv") in message


def test_the_cache_is_reused_and_keyed_by_the_files_bytes(tmp_path, capsys):
    config = copy_fixture(tmp_path)
    first = adapter(tmp_path, config=config, use_cache=True).prepare()
    capsys.readouterr()
    again = adapter(tmp_path, config=config, use_cache=True).prepare()
    assert "building fuxictr arrays" not in capsys.readouterr().err
    assert again.meta["fingerprint"] == first.meta["fingerprint"]
    assert np.array_equal(np.asarray(again.arrays["seq_0"]), first.arrays["seq_0"])
    edit_csv(config.parent / "tiny_seq" / "test.csv", 2, "price", "999.0")
    changed = adapter(tmp_path, config=config, use_cache=True).prepare()
    assert changed.meta["fingerprint"] != first.meta["fingerprint"]


def test_the_synthetic_replica_is_a_fuxictr_config_too(tmp_path, capsys):
    data = prepared(tmp_path, config=None, dataset_id=None)
    assert "SYNTHETIC replica" in capsys.readouterr().err
    assert data.meta["source"] == "synthetic" and data.meta["spec"]["tasks"] == ["click", "like"]
    assert data.meta["spec"]["history_fields"] == ["item_id", "cate_id"]
    written = Path(data.meta["files_dir"]) / "dataset_config.yaml"
    assert first_label(None, None) == "click" and first_label(str(written), "recbench_synthetic") == "click"
    # planted signal: a click is likelier when the target's category is in the click history
    frame = pl.read_csv(Path(data.meta["files_dir"]) / "train.csv", infer_schema=False)
    seen = frame.with_columns(hit=pl.col("cate_history").fill_null("").str.split("^").list.contains(pl.col("cate_id")))
    rates = seen.group_by("hit").agg(pl.col("click").cast(pl.Float64).mean()).sort("hit")["click"].to_list()
    assert rates[1] > rates[0] + 0.1


def test_the_bench_export_format_is_read(tmp_path):
    """recbench/bench/ctr.py writes a FuxiCTR config (parquet, absolute paths, a meta column with
    remap: false, '^'-joined histories): the adapter reads that format too."""
    from recbench.bench.ctr import CTRSettings, write_fuxictr_config

    rows = {"user": ["1", "2", "1", "3"], "age": ["0", "1", "0", "2"], "gender": ["1", "2", "1", "3"],
            "item": ["5", "6", "7", "5"], "cat": ["2", "2", "3", "2"], "seller": ["8", "8", "9", "8"],
            "brand": ["4", "4", "4", "1"], "hist_item": ["", "5", "5^6", "7"], "hist_cat": ["", "2", "2^2", "3"],
            "label": [1.0, 0.0, 1.0, 0.0], "row": [0, 1, 2, 3]}
    files = {}
    for split in ("train", "valid", "test"):
        path = tmp_path / f"{split}.parquet"
        pl.DataFrame(rows).write_parquet(path)
        files[split] = str(path)
    write_fuxictr_config(CTRSettings(), tmp_path / "config", "bench_x", files, 3, tmp_path / "data",
                         tmp_path / "checkpoints")
    data = prepared(tmp_path / "p", config=tmp_path / "config" / "dataset_config.yaml", dataset_id="bench_x")
    spec = data.meta["spec"]
    assert spec["history_fields"] == ["item", "cat"] and spec["tasks"] == ["label"] and spec["history_length"] == 3
    assert spec["user_fields"] == ["user", "age", "gender", "seller", "brand"]
    assert data.meta["stats"]["group_id"] == "user"
    assert data.arrays["seq_0"][2].tolist() == [0, 1, 2]  # padding pre; item 5 -> 1 (2x), 6 -> 2 (token order)


# ---------------------------------------------------------------------- one line per bad input
def failure(tmp_path: Path, **kwargs) -> str:
    with pytest.raises(UserInputError) as refused:
        prepared(tmp_path / "run", **kwargs)
    message = str(refused.value)
    assert "\n" not in message and "Fix:" in message, message
    return message


@pytest.mark.parametrize("case, line, column, value, expected", [
    ("non-numeric in a numeric field", 4, "price", "cheap", "line 4 has 'cheap', not a number"),
    ("NaN in a numeric field", 5, "price", "nan", "line 5 has 'nan', NaN or infinite"),
    ("inf in a numeric field", 3, "age", "inf", "line 3 has 'inf', NaN or infinite"),
    ("label not 0/1", 6, "clk", "2", "line 6 has '2', not 0 or 1"),
    ("empty label", 2, "clk", "", "line 2 has '', an empty value"),
    ("int id not whole", 7, "pid", "3.5", "line 7 has '3.5', not a whole number"),
])
def test_bad_values_name_file_column_and_line(tmp_path, case, line, column, value, expected):
    config = copy_fixture(tmp_path)
    train = config.parent / "tiny_seq" / "train.csv"
    edit_csv(train, line, column, value)
    message = failure(tmp_path, config=config)
    assert message.startswith(f"{train}, column '{column}': {expected}"), (case, message)


def test_a_missing_column_is_named_with_the_file(tmp_path):
    config = copy_fixture(tmp_path)
    valid = config.parent / "tiny_seq" / "valid.csv"
    frame = pl.read_csv(valid, infer_schema=False).drop("cate_sequence")
    frame.write_csv(valid)
    message = failure(tmp_path, config=config)
    assert message.startswith(f"{valid}, column 'cate_sequence': not in the file") and "active: false" in message


@pytest.mark.parametrize("edit, expected", [
    (("test_data: ./tiny_seq/test.csv", "test_data: ./tiny_seq/gone.csv"), "test_data './tiny_seq/gone.csv' not found"),
    (("valid_data: ./tiny_seq/valid.csv", "valid_data: ./tiny_seq/test.csv"), "valid_data and test_data are the same"),
    (("type: meta}", "type: meta, preprocess: convert_weekday}"), "'preprocess' is not supported"),
    (("type: meta}", "type: meta, share_embeding: userid}"), "unknown key 'share_embeding'"),
    (("    min_categr_count: 2\n", "    min_categr_count: 2\n    valid_size: 0.1\n"), "'valid_size' is not supported"),
    (("{name: request_id, active: True, dtype: str, type: meta}", "{name: clk, active: True, dtype: str, type: meta}"),
     "column 'clk' is both a label and a feature"),
    (("padding: pre, share_embedding: cate_id, ", "padding: pre, "), "a sequence that shares no categorical"),
    (("data_format: csv", "data_format: npz"), "data_format 'npz' is not supported"),
    (("type: categorical, source: user}", "type: embedding, source: user}"), "type embedding"),
])
def test_config_problems_are_one_line(tmp_path, edit, expected):
    config = copy_fixture(tmp_path)
    text = config.read_text()
    assert edit[0] in text
    config.write_text(text.replace(edit[0], edit[1], 1))
    message = failure(tmp_path, config=config)
    assert expected in message and str(config) in message, message


@pytest.mark.parametrize("kwargs, expected", [
    ({"dataset_id": None}, "data.dataset_id is missing (this config defines: tiny_seq, tiny_mt)"),
    ({"dataset_id": "tiny"}, "no dataset_id 'tiny' (it defines: tiny_seq, tiny_mt)"),
    ({"config": None}, "data.dataset_id=tiny_seq names a dataset of a FuxiCTR config, but no data.config"),
    ({"config": None, "dataset_id": None, "source": "raw"}, "data.source=raw reads a FuxiCTR config"),
    ({"config": "no/such/dataset_config.yaml"}, "no/such/dataset_config.yaml: file not found (data.config"),
    ({"source": "synthetic"}, "contradict each other"),
    ({"ctr_label": "buy"}, "data.ctr_label=buy is not one of its labels (clk)"),
    ({"history_fields": ["userid"]}, "data.history_fields names userid, which no sequence shares"),
])
def test_missing_or_wrong_settings_are_one_line(tmp_path, kwargs, expected):
    assert expected in failure(tmp_path, **kwargs)


# ---------------------------------------------------------------------- models and heads
def composed(*overrides: str, root: Path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data=fuxictr", f"paths.datasets={root}", "loader.batch_size=8",
                                           "loader.eval_batch_size=8", *overrides], return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def run_one_step(cfg, choices) -> dict[str, float]:
    """Build data, net and heads as the CLI does; one training step; metrics over the test split."""
    torch.manual_seed(0)
    datamodule, _, module = build(cfg, choices)
    batch = next(iter(datamodule.train_dataloader()))
    outputs = module.net(batch)
    loss = sum(sum(head.loss(outputs, batch).values()) for head in module.heads.values())
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in module.net.parameters())
    test = datamodule.batches("test", torch.arange(len(datamodule.tables["test_rows"])))
    with torch.no_grad():
        out = module.net(test[0])
    metrics = {}
    for head in module.heads.values():
        metrics.update(head.metrics({k: v for k, v in head.collect(out, test[0]).items()}))
    return metrics


@pytest.mark.parametrize("model", ["din", "deepfm", "dcn", "mmoe", "ple"])
def test_every_ctr_model_reads_a_fuxictr_dataset_with_the_ctr_head(tmp_path, model):
    cfg, choices = composed(f"model={model}", f"data.config={CONFIG}", "data.dataset_id=tiny_seq",
                            root=tmp_path)
    assert choices["task"] == "ctr" and cfg.task.heads.ctr.label == "clk" and cfg.task.monitor == "valid/auc/clk"
    metrics = run_one_step(cfg, choices)
    assert set(metrics) == {"auc/clk", "gauc/clk", "logloss/clk"} and 0.0 <= metrics["auc/clk"] <= 1.0


@pytest.mark.parametrize("model", ["mmoe", "ple", "din", "deepfm", "dcn"])
def test_several_labels_train_with_the_multitask_head(tmp_path, model):
    cfg, choices = composed(f"model={model}", f"data.config={CONFIG}", "data.dataset_id=tiny_mt", "task=live",
                            "task.heads.multitask.task_weights=null", root=tmp_path)
    metrics = run_one_step(cfg, choices)
    assert {"auc/clk", "auc/buy", "gauc/buy", "logloss/mean"} <= set(metrics)


def test_ctr_label_and_history_fields_choose_among_the_data(tmp_path):
    cfg, choices = composed("model=din", f"data.config={CONFIG}", "data.dataset_id=tiny_mt", "data.ctr_label=buy",
                            root=tmp_path)
    assert cfg.task.monitor == "valid/auc/buy"
    assert set(run_one_step(cfg, choices)) == {"auc/buy", "gauc/buy", "logloss/buy"}
    cfg, choices = composed("model=din", f"data.config={CONFIG}", "data.dataset_id=tiny_seq",
                            "data.history_fields=[cate_id]", root=tmp_path)
    datamodule, _, module = build(cfg, choices)
    assert module.net.history_fields == ["cate_id"] and "hist_adgroup_id" not in datamodule.batch_keys
    cfg, _ = composed("model=din", root=tmp_path)  # no config: the replica's first label
    assert cfg.data.ctr_label == "click" and cfg.task.monitor == "valid/auc/click"


# ---------------------------------------------------------------------- the command line
def test_cli_din_on_a_hand_written_fuxictr_config(tmp_path):
    command = [sys.executable, "-m", "recbench", "model=din", "data=fuxictr", f"data.config={CONFIG}",
               "data.dataset_id=tiny_seq", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
               "loader.batch_size=4", "logger=none", f"paths.datasets={tmp_path / 'datasets'}",
               f"paths.experiments={tmp_path / 'experiments'}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "finished" and record["data"] == "fuxictr" and record["data_source"] == "raw"
    assert record["dataset_stats"]["dataset_id"] == "tiny_seq" and record["monitor"]["metric"] == "valid/auc/clk"
    assert "test/auc/clk" in record["metrics"]["test"]
    assert record["config"]["task"]["heads"]["ctr"]["label"] == "clk"


def test_datamodule_batches_follow_the_ctr_schema(tmp_path):
    datamodule = RecDataModule(adapter(tmp_path), batch_size=4, eval_batch_size=8, seed=0)
    datamodule.prepare()  # checks the prepared data against the ctr schema (recbench/data/schema.py)
    assert datamodule.prepare().meta["spec"]["schemas"] == ["ctr"]
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["hist_adgroup_id"].shape == (4, 4) and batch["hist_mask"].dtype == torch.bool
    assert batch["numeric"].shape == (4, 2) and batch["label_clk"].dtype == torch.float32
    assert batch["userid"].dtype == torch.int64 and batch["group"].dtype == torch.int64
