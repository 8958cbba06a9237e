"""The benchmark (recbench/bench) and what it compares: DIN, DeepFM, the CTR head, the FuxiCTR
export, the full-size replica writer; a smoke run of `python -m recbench.bench --quick`."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import numpy as np
import polars as pl
import pytest
import torch

from recbench.bench import ctr
from recbench.data import tmall_replica as R
from recbench.data.tmall import _stable_argsort3
from recbench.models.deepfm import DeepFM
from recbench.models.din import DIN, DINAttention
from recbench.models.lookup import FusedEmbedding, weighted_row_sum
from recbench.models.layers import MLP
from recbench.module import RecModule, split_parameters
from recbench.tasks.ctr import CTRHead
from tests.conftest import REPO


def build(name: str, spec):
    torch.manual_seed(0)
    if name == "din":
        return DIN(spec, embedding_dim=8, history_fields=["item", "cat"], attention_hidden=[16],
                   attention_activation="dice", attention_softmax=False, mlp_hidden=[32, 16], dropout=0.0,
                   embedding_init_std=0.05, sparse_embeddings=True)
    return DeepFM(spec, embedding_dim=8, history_fields=["item", "cat"], mlp_hidden=[32, 16], dropout=0.0,
                  embedding_init_std=0.05, sparse_embeddings=True)


@pytest.mark.parametrize("name", ["din", "deepfm"])
def test_training_steps_lower_the_loss_with_sparse_row_updates(name, tiny_datamodule, tiny_batch):
    spec = tiny_datamodule.spec
    net, head = build(name, spec), CTRHead(spec, "purchase", 1.0, "impressions")
    logit = net(tiny_batch)["logit"]
    assert logit.shape == (len(tiny_batch["group"]),) and torch.isfinite(logit).all()
    sparse, dense = split_parameters(net)
    # every id table (DeepFM: with the 1-d linear weights as two more columns) in one fused sparse table
    assert len(sparse) == 1
    dense_opt, sparse_opt = torch.optim.Adam(dense, lr=1e-2), torch.optim.SparseAdam(sparse, lr=1e-2)
    losses = []
    for _ in range(8):
        loss = head.loss(net(tiny_batch), tiny_batch)["ctr_bce"]
        dense_opt.zero_grad(), sparse_opt.zero_grad()
        loss.backward()
        for table in sparse:
            grad = table.grad
            assert grad.is_sparse and grad.coalesce()._nnz() == grad._nnz()  # one row per distinct id
        dense_opt.step(), sparse_opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert sparse[0].detach()[0].abs().sum() == 0  # the shared padding row never moves


def test_deepfm_logit_is_linear_plus_fm_plus_mlp(tiny_datamodule, tiny_batch):
    """The logit against the formula written out: bias + 1-d weights (history: its own column, summed
    over valid positions) + pairwise inner products of the field vectors + the MLP over them."""
    net = build("deepfm", tiny_datamodule.spec).eval()
    b = tiny_batch
    with torch.no_grad():
        table, dim = net.embedding.table.weight, net.dim

        def rows(field, ids):  # the fused row of each id (0 stays the zero padding row)
            return torch.where(ids > 0, ids + net.embedding.offsets[field], 0)

        single = [table[rows(f, b[f])] for f in net.fields]
        linear = net.bias + sum(e[:, dim] for e in single)
        vectors = [e[:, :dim] for e in single]
        mask = b["hist_mask"].float()
        for f in net.history_fields:
            hist = table[rows(f, b[f"hist_{f}"])][..., :dim]
            vectors.append((hist * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1))
            own = table[rows(f, b[f"hist_{f}"])][..., dim + 1]  # padding row 0 is all zeros
            linear = linear + (own * mask).sum(1)
        pairs = sum((vectors[i] * vectors[j]).sum(-1) for i in range(len(vectors))
                    for j in range(i + 1, len(vectors)))
        deep = net.mlp(torch.cat(vectors, -1)).squeeze(-1)
        torch.testing.assert_close(net(b)["logit"], linear + pairs + deep, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sparse", [True, False])
def test_fused_embedding_equals_one_table_per_field(sparse):
    cards = {"user": 5, "item": 7, "cat": 3}
    fused = FusedEmbedding(cards, ["user", "item", "cat"], dim=4, sparse=sparse, init_std=1.0)
    tables = {f: torch.nn.Embedding(c, 4, padding_idx=0) for f, c in cards.items()}
    with torch.no_grad():
        for f, table in tables.items():
            rows = torch.arange(1, cards[f]) + fused.offsets[f]
            table.weight[1:] = fused.table.weight[rows]
    item = torch.tensor([[0, 3, 6], [1, 1, 0]])
    user, cat = torch.tensor([1, 4]), torch.tensor([2, 0])
    got = fused([("user", user), ("item", item), ("cat", cat)])
    want = [tables["user"](user), tables["item"](item), tables["cat"](cat)]
    for g, w in zip(got, want):
        assert g.shape == w.shape and torch.allclose(g, w)
    sum(x.sum() * (i + 1) for i, x in enumerate(got)).backward()
    dense = fused.table.weight.grad.to_dense() if sparse else fused.table.weight.grad
    sum(x.sum() * (i + 1) for i, x in enumerate(want)).backward()
    for f, table in tables.items():
        rows = torch.arange(1, cards[f]) + fused.offsets[f]
        assert torch.allclose(dense[rows], table.weight.grad[1:])
    assert dense[0].abs().sum() == 0


@pytest.mark.parametrize("length, weighted", [(1, False), (5, False), (5, True)])
def test_weighted_row_sum_matches_embedding_and_its_gradient(length, weighted):
    """The CSR gradient path gives the values and the table gradient of nn.functional.embedding
    (padding row 0 gets none), and the same gradient bit for bit when run twice."""
    torch.manual_seed(0)
    table = torch.randn(30, 6, requires_grad=True)
    ids = torch.randint(0, 30, (40, length))
    ids[:5] = 0
    weights = torch.rand(40, length) * (ids > 0) if weighted else None
    grad_out = torch.randn(40, 6)

    got = weighted_row_sum(table, ids, weights)
    got.backward(grad_out)
    got_grad = table.grad.clone()
    table.grad = None
    found = torch.nn.functional.embedding(ids, table, padding_idx=0)
    want = (found * (weights if weighted else torch.ones(40, length)).unsqueeze(-1)).sum(1)
    want.backward(grad_out)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, table.grad)
    assert got_grad[0].abs().sum() == 0

    table.grad = None
    weighted_row_sum(table, ids, weights).backward(grad_out)
    assert torch.equal(table.grad, got_grad)


@pytest.mark.parametrize("sparse", [True, False])
def test_fused_embedding_pooled_equals_masked_sums(sparse):
    cards = {"item": 9, "cat": 4}
    fused = FusedEmbedding(cards, ["item", "cat"], dim=3, sparse=sparse, init_std=1.0)
    item, cat = torch.tensor([[1, 8, 0], [0, 0, 0]]), torch.tensor([[2, 3, 0], [0, 0, 0]])
    mask = (item > 0).float()
    got = fused.pooled([("item", item), ("cat", cat)], mask)
    want = [(found * mask.unsqueeze(-1)).sum(1) for found in fused([("item", item), ("cat", cat)])]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_compile_keeps_parameter_names_and_the_function(tiny_datamodule, tiny_batch):
    """compile=true compiles the net in place: the same state-dict keys (checkpoints and exports
    stay readable) and the same logits as the eager net."""
    from recbench.__main__ import compile_net

    spec = tiny_datamodule.spec
    torch.manual_seed(0)
    eager = DeepFM(spec, embedding_dim=8, history_fields=["item", "cat"], mlp_hidden=[32, 16], dropout=0.0,
                   embedding_init_std=0.05, sparse_embeddings=False).eval()
    compiled = DeepFM(spec, embedding_dim=8, history_fields=["item", "cat"], mlp_hidden=[32, 16], dropout=0.0,
                      embedding_init_std=0.05, sparse_embeddings=False).eval()
    compiled.load_state_dict(eager.state_dict())
    compile_net(compiled, "cpu")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(compiled(tiny_batch)["logit"], eager(tiny_batch)["logit"], rtol=1e-5, atol=1e-5)


def test_compile_without_a_cpp_compiler_is_one_clear_error(monkeypatch):
    import shutil

    from recbench.__main__ import compile_net
    from recbench.errors import UserInputError

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserInputError, match="needs a C\\+\\+ compiler.*Fix: install g\\+\\+"):
        compile_net(torch.nn.Linear(2, 1), "cpu")


@pytest.mark.parametrize("softmax", [False, True])
def test_din_attention_equals_the_concatenated_form(softmax):
    torch.manual_seed(0)
    attention = DINAttention(6, [8, 4], "relu", softmax)
    target, history = torch.randn(3, 6), torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    query = target.unsqueeze(1).expand_as(history)
    features = torch.cat([query, history, query - history, query * history], -1)
    scores = attention.rest(attention.first(features).flatten(0, 1)).view(3, 5)
    weights = (torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0) if softmax
               else scores * mask)
    want = torch.einsum("bl,bld->bd", weights, history)
    slots = attention.scored_slots(mask)
    assert slots.tolist() == [0, 1, 5, 6, 7, 8, 9]  # the real items only
    items = history.reshape(15, 6).index_select(0, slots)
    assert torch.allclose(attention(target, items, slots, mask), want, atol=1e-5)
    attention.eval()  # every position scored (as a training batch with < 2 real items is): same output
    assert torch.allclose(attention(target, history.reshape(15, 6), torch.arange(15), mask), want, atol=1e-5)


def test_ctr_head_metrics_and_label_column():
    from sklearn.metrics import log_loss, roc_auc_score

    spec = {"target_actions": ["cart", "purchase", "favourite"]}
    head = CTRHead(spec, "purchase", 1.0, "impressions")
    rng = np.random.default_rng(0)
    labels = torch.tensor(rng.random((200, 3)) < 0.3, dtype=torch.float32)
    logit = torch.tensor(rng.normal(size=200), dtype=torch.float32) + 2 * labels[:, 1]
    batch = {"label_action": labels, "group": torch.tensor(rng.integers(0, 10, 200))}
    loss = head.loss({"logit": logit}, batch)["ctr_bce"]
    assert torch.isclose(loss, torch.nn.functional.binary_cross_entropy_with_logits(logit, labels[:, 1]))
    values = head.metrics(head.collect({"logit": logit}, batch))
    prob = torch.sigmoid(logit).numpy()
    assert values["auc/purchase"] == pytest.approx(roc_auc_score(labels[:, 1], prob), abs=1e-9)
    assert values["logloss/purchase"] == pytest.approx(log_loss(labels[:, 1], prob), abs=1e-6)
    assert 0 <= values["gauc/purchase"] <= 1
    with pytest.raises(KeyError):
        CTRHead(spec, "click", 1.0, "impressions")


def test_fuxictr_export_holds_the_same_rows(tiny_datamodule, tmp_path):
    adapter, prepared = tiny_datamodule.adapter, tiny_datamodule.prepared
    settings = ctr.CTRSettings.quick()
    info = ctr.export_for_fuxictr(adapter, prepared, settings, tmp_path / "parquet", chunk=500)
    tables = {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}
    for split in ("train", "valid", "test"):
        frame = pl.read_parquet(info["files"][split])
        rows = torch.arange(len(tables[f"{split}_rows"]))
        batch = adapter.assemble(tables, split, rows)
        assert frame.height == len(rows) and frame["row"].to_list() == rows.tolist()
        assert frame["item"].to_list() == [str(v) for v in batch["item"].tolist()]
        np.testing.assert_array_equal(frame["label"].to_numpy(), batch["label_action"][:, 1].numpy())
        for r in (0, len(rows) // 2, len(rows) - 1):
            valid = batch["hist_mask"][r]
            assert frame["hist_item"][r] == "^".join(str(v) for v in batch["hist_item"][r][valid].tolist())
            assert frame["hist_cat"][r] == "^".join(str(v) for v in batch["hist_cat"][r][valid].tolist())
    expids = ctr.write_fuxictr_config(settings, tmp_path / "config", "tiny", info["files"], adapter.history_length,
                                      tmp_path / "data", tmp_path / "ckpt")
    import yaml

    models = yaml.safe_load((tmp_path / "config" / "model_config.yaml").read_text())
    dataset = yaml.safe_load((tmp_path / "config" / "dataset_config.yaml").read_text())["tiny"]
    din = models[expids["din"]]
    assert din["embedding_dim"] == settings.embedding_dim and din["batch_size"] == settings.batch_size
    assert din["dnn_hidden_units"] == list(settings.mlp_hidden) and din["reduce_lr_on_plateau"] is False
    assert models[expids["deepfm"]]["hidden_units"] == list(settings.mlp_hidden)
    sequences = [c for c in dataset["feature_cols"] if c["type"] == "sequence"]
    assert [c["max_len"] for c in sequences] == [adapter.history_length] * 2


def test_recbench_overrides_compose_for_both_models():
    from recbench.bench.worker import compose

    settings = ctr.CTRSettings.quick()
    for model in ("din", "deepfm"):
        cfg, choices = compose(ctr.recbench_overrides(settings, model, "synthetic", REPO / "experiments" / "x"))
        assert choices["task"] == "ctr" and cfg.model.net.embedding_dim == settings.embedding_dim
        assert list(cfg.model.net.mlp_hidden) == list(settings.mlp_hidden)
        assert cfg.loader.batch_size == settings.batch_size and cfg.trainer.max_epochs == settings.epochs
        assert cfg.task.monitor == "valid/auc/purchase"


def test_blocked_replica_writer_matches_the_generator(tmp_path):
    config = R.TmallReplicaConfig(n_users=120, n_items=1500, episodes_per_user=12.0, seed=2)
    R.write_tmall_replica(tmp_path / "one", config)  # one block: simulated whole
    lines: list[str] = []
    R.write_tmall_replica(tmp_path / "many", config, users_per_block=50, progress=lines.append)
    assert len(lines) == 3 and "users 120/120" in lines[-1]
    one = pl.read_csv(tmp_path / "one" / R.LOG_FILE)
    log = pl.read_csv(tmp_path / "many" / R.LOG_FILE)
    assert log.columns == one.columns and log["user_id"].n_unique() == config.n_users
    assert abs(log.height - one.height) < 0.5 * one.height  # same generator, other draws per block (heavy tail)
    blocks = 1 + (log["user_id"] != log["user_id"].shift(1)).sum()
    assert blocks == config.n_users  # each user's rows stay contiguous
    info = pl.read_csv(tmp_path / "many" / R.USER_INFO_FILE)
    assert info.height == config.n_users and info["user_id"].is_sorted()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def lexsort_shuffle(rng: np.random.Generator, n_users: int, rows):
    """The row order by definition: np.lexsort by (user block, day key, tie-breaker), same draws."""
    block_rank = rng.permutation(n_users)
    _, inv = np.unique(rows.user * R.N_DAYS + rows.day, return_inverse=True)
    day_key = rng.random(inv.max() + 1)[inv]
    tie = rng.random(len(rows.ep))
    order = np.lexsort((tie, day_key, block_rank[rows.user]))
    return R._Rows(ep=rows.ep[order], user=rows.user[order], day=rows.day[order], action=rows.action[order])


def test_fast_row_shuffle_is_the_lexsort_order():
    rng = np.random.default_rng(0)
    n = 5000
    rows = R._Rows(ep=np.arange(n), user=rng.integers(0, 40, n), day=rng.integers(0, 5, n), action=rng.integers(0, 4, n))
    a = lexsort_shuffle(np.random.default_rng(7), 40, rows)
    b = R._shuffle_rows(np.random.default_rng(7), 40, rows)
    for field in ("ep", "user", "day", "action"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_stable_three_column_argsort_matches_numpy():
    key = np.random.default_rng(0).integers(0, 3, (3000, 3))  # many ties
    np.testing.assert_array_equal(_stable_argsort3(key), np.argsort(key, axis=1, kind="stable"))


def test_cli_quick_preprocess_writes_json_and_table(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "recbench.bench", "--quick", "--only", "preprocess",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    entry = figures["preprocess"]["logs"]["replica"]
    assert entry["rows"] > 100_000 and entry["build"]["peak_tree_rss_gib"] > 0
    assert entry["reload"]["phases"].get("read_cache", 0) > 0 and "build" not in entry["reload"]["phases"]
    assert "(b) Tmall adapter" in done.stdout and "figures:" in done.stdout


def test_cli_quick_gpu_section_measures_the_cpu_and_says_what_it_skipped(tmp_path):
    """(d) runs on every device torch sees; here the CPU: lookup bytes/s against copy bandwidth,
    with recbench's own CSR gradient path, and a stated reason when no CUDA device is there."""
    import torch

    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "recbench.bench", "--quick", "--only", "gpu", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())["gpu"]
    cpu = figures["devices"]["cpu"]
    assert cpu["copy_gb_per_s"] > 0.1
    for case in cpu["cases"].values():
        assert case["gather_gb_per_s"] > 0 and case["gradient_gb_per_s"] > 0
        assert case["gather_of_copy"] == pytest.approx(case["gather_gb_per_s"] / cpu["copy_gb_per_s"])
    if not torch.cuda.is_available():
        assert figures["cuda_training"]["status"].startswith("not run: no CUDA device")
        assert "CUDA training: not run" in done.stdout
    assert "(d) id-table lookups" in done.stdout


@pytest.mark.slow
def test_cli_quick_all_sections(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "recbench.bench", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for model in ("din", "deepfm"):
        rec = figures["ctr"]["datasets"]["synthetic"]["models"][model]["recbench"]
        assert rec["samples_per_second"] > 0 and 0 <= rec["test"]["auc"] <= 1
    assert figures["models"]["models"]["a2gen/tmall"]["status"] == "ok"
    assert figures["gpu"]["devices"]["cpu"]["copy_gb_per_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["din", "deepfm"])
def test_cli_main_job_with_ctr_models(tmp_path, model):
    command = [sys.executable, "-m", "recbench", f"model={model}", "data=tmall",
               f"paths.experiments={tmp_path / 'experiments'}", f"paths.datasets={tmp_path / 'datasets'}",
               f"hydra.run.dir={tmp_path / 'run'}", "data.replica.n_users=150", "data.replica.n_items=1500",
               "data.replica.episodes_per_user=15", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["task"] == "ctr" and 0 <= record["metrics"]["test"]["test/auc/purchase"] <= 1


def test_keep_freed_memory_sets_glibc_thresholds_where_malloc_is_glibc():
    import platform

    from recbench.allocator import keep_freed_memory

    assert keep_freed_memory() == (platform.libc_ver()[0] == "glibc")


def test_batches_hold_only_what_a_declaring_model_and_heads_read(tiny_datamodule):
    from recbench.data.datamodule import declared_batch_keys
    from recbench.tasks.ctr import CTRHead

    spec = tiny_datamodule.spec
    net = DIN(spec, 4, ["item", "cat"], [8], "dice", False, [8], 0.0, 1e-4, False)
    head = CTRHead(spec, "purchase", 1.0, "impressions")
    keys = declared_batch_keys([net, head])
    assert keys == {*spec["user_fields"], *spec["item_fields"], "hist_item", "hist_cat", "hist_mask",
                    "label_action", "group"}
    assert declared_batch_keys([net, head, torch.nn.Linear(1, 1)]) is None  # one part undeclared: every key
    adapter, tables, rows = tiny_datamodule.adapter, tiny_datamodule.tables, torch.arange(50)
    full = adapter.assemble(tables, "train", rows)
    some = adapter.assemble(tables, "train", rows, keys)
    assert set(some) == keys and {"hist_action_time", "label_seq"} <= set(full)
    assert all(torch.equal(some[key], full[key]) for key in keys)
    outputs = net(some)  # the net and head run on the reduced batch
    assert torch.isfinite(head.loss(outputs, some)["ctr_bce"])


# ---------------------------------------------------------------------- optimizer by table size
def test_small_id_tables_join_the_dense_optimizer_and_large_ones_stay_row_wise():
    from recbench.optim.row_updates import AUTO_ROWS_PER_SAMPLE, choose_row_updates, resolve_sparse_min_rows

    def net():
        return torch.nn.ModuleDict({"small": torch.nn.Embedding(50, 4, sparse=True),
                                    "large": torch.nn.Embedding(500, 4, sparse=True),
                                    "dense": torch.nn.Embedding(5000, 4, sparse=False), "mlp": torch.nn.Linear(4, 1)})

    model = net()
    choices = choose_row_updates(model, 100)
    assert choices == [{"table": "small", "rows": 50, "sparse": False}, {"table": "large", "rows": 500, "sparse": True}]
    sparse, dense = split_parameters(model)
    assert [id(p) for p in sparse] == [id(model["large"].weight)]
    assert id(model["small"].weight) in {id(p) for p in dense} and id(model["dense"].weight) in {id(p) for p in dense}
    for keep in (None, 0):  # every table the model marks sparse stays row-wise
        assert all(c["sparse"] for c in choose_row_updates(net(), keep))
    assert resolve_sparse_min_rows("auto", 4096) == AUTO_ROWS_PER_SAMPLE * 4096
    assert resolve_sparse_min_rows(7, 4096) == 7 and resolve_sparse_min_rows(None, 4096) is None
    with pytest.raises(ValueError, match="sparse_min_rows"):
        choose_row_updates(net(), -1)


def test_a_small_fused_table_trains_with_one_dense_adam(tiny_datamodule, tiny_batch):
    """The default rule on a small vocabulary: the fused id table goes to the dense Adam (one
    optimizer, the table in the gradient clip) and its gradient is dense; the function is unchanged."""
    spec = tiny_datamodule.spec
    row_wise, net = build("din", spec), build("din", spec)
    module = RecModule(net, {"ctr": CTRHead(spec, "purchase", 1.0, "impressions")}, partial(torch.optim.Adam, lr=1e-2),
                       partial(torch.optim.SparseAdam, lr=1e-2), 10.0, sparse_min_rows=10 ** 9)
    assert module.row_updates == [{"table": "embedding.table", "rows": len(net.embedding.table.weight), "sparse": False}]
    optimizers = module.configure_optimizers()
    assert len(optimizers) == 1 and isinstance(optimizers[0], torch.optim.Adam)
    assert id(net.embedding.table.weight) in {id(p) for p in module._clipped}
    net.eval(), row_wise.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(tiny_batch)["logit"], row_wise(tiny_batch)["logit"])
    net.train()
    module.heads["ctr"].loss(net(tiny_batch), tiny_batch)["ctr_bce"].backward()
    assert not net.embedding.table.weight.grad.is_sparse


def test_the_default_optimizer_config_picks_by_table_size():
    from recbench.bench.worker import compose

    cfg, _ = compose(["model=din", "data=tmall"])
    assert cfg.optimizer.sparse_min_rows == "auto" and cfg.model.net.sparse_embeddings is True
    cfg, _ = compose(["model=mmoe_adatask", "data=kuailive"])
    assert cfg.optimizer.sparse_min_rows == 0  # AdaTask: tables stay row-wise


# ---------------------------------------------------------------------- memory, grid
def test_tree_memory_reads_pss_and_says_where_it_fell_back_to_rss(monkeypatch):
    import os

    from recbench.bench import common

    pss, rss, fallback = common.tree_memory(os.getpid())
    assert 0 < pss <= rss * 1.01 and fallback == 0
    monkeypatch.setattr(common, "_pss_bytes", lambda pid: None)
    pss, rss, fallback = common.tree_memory(os.getpid())
    assert pss == rss and fallback == 1


def test_grid_points_parse_and_the_generated_data_hold_exactly_the_planned_ids():
    from recbench.bench import grid

    assert grid.parse_points(["20x50k,50x1m", "100x10m"]) == [grid.Point(20, 50_000), grid.Point(50, 1_000_000),
                                                              grid.Point(100, 10_000_000)]
    assert len(grid.parse_points(None)) == 9 and grid.Point(100, 10_000_000).name == "100x10m"
    with pytest.raises(ValueError, match="20x50k"):
        grid.parse_points(["20-50k"])
    data = grid.generate(history=8, rows=4_000, train_rows=6_000, eval_rows=500, seed=0)
    sizes, train = data["sizes"], slice(0, 6_000)
    assert sum(sizes.values()) == 4_000
    hist = data["item_history"][train]
    assert (np.arange(8)[None, :] < data["lengths"][train, None]).sum() == (hist >= 0).sum()  # lengths 1..8
    items = np.union1d(data["item"][train], hist[hist >= 0])
    assert len(items) == sizes["item"] and len(np.unique(data["user"][train])) == sizes["user"]
    assert 0.05 < data["label"].mean() < 0.6
    frame = grid._frame(data, 0, 3)
    assert frame["item_history"][0] == "^".join(str(i) for i in hist[0][:data["lengths"][0]])
    assert frame["cat_history"][0] == "^".join(str(data["cat_of"][i]) for i in hist[0][:data["lengths"][0]])


def test_grid_rates_ratios_and_fuxictr_command():
    from recbench.bench import grid

    seconds = [[5.0, *[0.5] * 12, 0.1], [4.0, *[0.25] * 12, 0.1]]
    samples = [[100] * 13 + [10], [100] * 13 + [10]]
    assert grid.steady_step_rate(seconds, samples, warmup=1) == pytest.approx(300.0)  # median of 200s and 400s
    assert grid.epoch_rate([1.0, 4.0, 2.0]) == 3.0 and grid.epoch_rate([5.0]) == 5.0
    run = lambda rate: {"samples_per_second": rate, "step_samples_per_second": rate, "peak_tree_pss_gib": 1.0}  # noqa: E731
    entry = {"runs": {"recbench": {"0": run(10.0), "1": run(12.0)}, "fuxictr_w1": {"0": run(4.0), "1": run(5.0)}}}
    summary = grid.summarize(entry, ("recbench", "fuxictr_w1"))
    ratio = summary["fuxictr_w1"]["recbench_ratio_samples_per_second"]
    assert ratio == pytest.approx({"median": 11.0 / 4.5, "min": 10.0 / 5.0, "max": 12.0 / 4.0})
    command = grid.fuxictr_command(REPO / "py", REPO / "cfg", "din", REPO / "out.json", 2, 2, num_workers=3, seed=3)
    assert command[:3] == ["taskset", "-c", "0-1"] and command[command.index("--num-workers") + 1] == "3"
    assert command[command.index("--expid") + 1] == "DIN_recbench" and "--preprocess-only" not in command
    assert command[command.index("--seed") + 1] == "3"


def test_grid_targets_compare_recbench_with_every_fuxictr_side():
    from recbench.bench import grid

    def run(rate, auc, pss):
        return {"samples_per_second": rate, "step_samples_per_second": rate, "peak_tree_pss_gib": pss, "test": {"auc": auc}}

    entry = {"runs": {"recbench": {"0": run(10.0, 0.700, 1.0), "1": run(12.0, 0.704, 1.5)},
                      "fuxictr_w1": {"0": run(4.0, 0.701, 3.0), "1": run(5.0, 0.702, 4.0)},
                      "fuxictr_w3": {"0": run(6.0, 0.699, 2.0), "1": run(6.0, 0.700, 2.0)}}}
    summary = grid.summarize(entry, ("recbench", "fuxictr_w1", "fuxictr_w3"))
    assert summary["fuxictr_w1"]["recbench_auc_gap"] == pytest.approx(0.702 - 0.7015)  # gap of the means
    v = grid.verdict(summary)
    assert v["ratio"] == pytest.approx(11.0 / 6.0) and not v["speed_met"]  # the faster FuxiCTR side decides
    assert v["auc_gap"] == pytest.approx(0.702 - 0.6995) and not v["auc_met"]  # 0.0025 higher is not "within"
    assert (v["pss_recbench"], v["pss_fuxictr"], v["memory_met"]) == (1.5, 2.0, True)
    entry["runs"]["fuxictr_w3"] = {"0": run(5.0, 0.7015, 2.0), "1": run(5.0, 0.7025, 1.4)}
    v = grid.verdict(grid.summarize(entry, ("recbench", "fuxictr_w1", "fuxictr_w3")))
    assert v["speed_met"] and v["auc_met"] and not v["memory_met"]  # 1.5 GiB against FuxiCTR's 1.4
    text = grid.report({"settings": __import__("dataclasses").asdict(grid.GridSettings()), "threads": 2,
                        "points": {"din/20x50k": entry}})
    assert "2.20x met" in text and "MISSED" in text and "+0.0005" in text


def test_grid_runs_interleaved_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    from recbench.bench import grid

    order: list[tuple[str, int]] = []
    cut = [True]
    monkeypatch.setattr(grid, "write_grid_data", lambda folder, point, settings: {"rows": {}})
    monkeypatch.setattr(grid, "prepare_point", lambda *args: {"recbench": {"seconds": 1.0}})

    def fake_run(settings, side, model, folder, run_dir, threads, cpus, seed):
        order.append((side, int(run_dir.name.rsplit("_r", 1)[1])))
        assert seed == settings.seed + order[-1][1]  # round r trains with seed + r on every side
        if len(order) == 3 and cut and cut.pop():
            raise grid.JobFailed("cut off")
        return {"samples_per_second": 1.0 + len(order), "step_samples_per_second": 1.0, "peak_tree_pss_gib": 1.0}

    monkeypatch.setattr(grid, "run_recbench", fake_run)
    settings = grid.GridSettings(repeats=2, sides=("recbench", "recbench_dense"))
    out = tmp_path / "grid.json"
    with pytest.raises(grid.JobFailed):
        grid.run(settings, [grid.Point(20, 50_000)], tmp_path, out, 2, False, lambda m: None)
    assert order == [("recbench", 0), ("recbench_dense", 0), ("recbench", 1)]  # A B A: round by round
    saved = json.loads(out.read_text())["points"]["din/20x50k"]["runs"]
    assert {side: sorted(runs) for side, runs in saved.items()} == {"recbench": ["0"], "recbench_dense": ["0"]}
    order.clear()
    figures = grid.run(settings, [grid.Point(20, 50_000)], tmp_path, out, 2, False, lambda m: None)
    assert order == [("recbench", 1), ("recbench_dense", 1)]  # only the missing runs
    assert figures["points"]["din/20x50k"]["summary"]["recbench"]["runs"] == 2
    order.clear()
    grid.run(settings, [grid.Point(20, 50_000)], tmp_path, out, 2, False, lambda m: None)
    assert order == []  # a complete point is skipped
    grid.run(dataclasses_replace(settings, epochs=2), [grid.Point(20, 50_000)], tmp_path, out, 2, False, lambda m: None)
    assert len(order) == 4  # other settings: measured again
    assert "(grid)" in grid.report(json.loads(out.read_text()))


def dataclasses_replace(settings, **changes):
    import dataclasses

    return dataclasses.replace(settings, **changes)


def test_cli_quick_grid_trains_recbench_on_generated_fuxictr_format_data(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "recbench.bench", "--quick", "--only", "grid", "--out", str(out),
               "--work", str(tmp_path / "work")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    grid = json.loads((tmp_path / "grid-quick.json").read_text())
    entry = grid["points"]["din/20x5k"]
    run = entry["runs"]["recbench"]["0"]
    assert run["samples_per_second"] > 0 and run["step_samples_per_second"] > 0 and 0 <= run["test"]["auc"] <= 1
    assert run["peak_tree_pss_gib"] > 0 and run["embedding_rows"] == 5_000 + 8  # 7 fields' OOV rows + padding
    assert run["row_updates"] == [{"table": "embedding.table", "rows": 5_008, "sparse": False}]  # auto: dense Adam
    assert run["glibc_tunables"] if "glibc_tunables" in run else run["keep_freed_memory"]
    assert "(grid)" in done.stdout and "dense Adam" in done.stdout
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "done before, skipped" in again.stderr
