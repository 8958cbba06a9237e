"""Staytime and comment-ranking heads, and the LCU / DCN plugins on a tiny KuaiComt replica."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch

from recbench.data.kuaicomt import duration_quantiles
from recbench.tasks.staytime import (CommentRankingHead, D2QHead, ValueRegressionHead, WLRStaytimeHead, list_mle,
                                     staytime_metrics)
from tests.conftest import REPO

SPEC = {"shown_comments": 4}
TINY_KUAICOMT = ["data=kuaicomt", "data.replica.n_users=300", "data.replica.n_videos=200",
                 "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def brute_list_mle(logits: list[float], scores: list[float]) -> float:
    """-log Plackett-Luce probability of the order that sorts `scores` descending (stable)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    total = 0.0
    for position, item in enumerate(order):
        rest = [logits[j] for j in order[position:]]
        total += math.log(sum(math.exp(v) for v in rest)) - logits[item]
    return total


def test_list_mle_matches_the_plackett_luce_definition():
    torch.manual_seed(0)
    logits, scores = torch.randn(3, 4), torch.rand(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    expected = [brute_list_mle(logits[0].tolist(), scores[0].tolist()),
                brute_list_mle(logits[1, :2].tolist(), scores[1, :2].tolist())]  # 1-item lists do not count
    assert list_mle(logits, scores, mask).item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    # the best possible logits (ordered like the scores, far apart) give a loss near zero
    ordered = scores[:1] * 100
    assert list_mle(ordered, scores[:1], mask[:1]).item() < 1e-3


def test_wlr_decoding_is_odds_times_companion_negative_probability():
    head = WLRStaytimeHead(SPEC, weight=1.0, companion_weight=1.0)
    z, zc = torch.tensor([0.0, math.log(3.0)]), torch.tensor([0.0, 0.0])
    prediction, score = head.decode({"staytime_logit": z, "companion_logit": zc}, {})
    assert prediction.tolist() == pytest.approx([1.0 * 0.5, 3.0 * 0.5], rel=1e-4)
    assert torch.equal(score, zc)
    batch = {"label_long_view": torch.tensor([1.0, 0.0]), "label_staytime": torch.tensor([20.0, 0.5])}
    terms = head.loss({"staytime_logit": z, "companion_logit": zc}, batch)
    # weights max(staytime, 1) = 20 and 1: BCE(logit 0, label 1) = log 2, BCE(logit log 3, label 0) = log 4
    assert terms["wlr"].item() == pytest.approx((20 * math.log(2) + math.log(4)) / 2, rel=1e-5)
    assert terms["wlr_companion"].item() == pytest.approx(math.log(2), rel=1e-5)


def test_value_regression_predicts_expm1_of_its_output():
    head = ValueRegressionHead(SPEC, weight=1.0)
    prediction, _ = head.decode({"staytime_logit": torch.log1p(torch.tensor([0.0, 9.0]))}, {})
    assert prediction.tolist() == pytest.approx([0.0, 9.0], rel=1e-5)


def test_d2q_percentile_round_trip_per_duration_bucket():
    table = [[0.0] * 5, [0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 10.0, 20.0, 30.0, 40.0]]  # 5 levels per bucket
    head = D2QHead({"staytime_quantiles": table}, weight=1.0)
    staytime, bucket = torch.tensor([2.0, 20.0]), torch.tensor([1, 2])
    assert head.percentile(staytime, bucket).tolist() == pytest.approx([0.5, 0.5])  # same rank, other scale
    seconds, _ = head.decode({"staytime_logit": torch.logit(torch.tensor([0.5, 0.625]))}, {"duration_bucket": bucket})
    assert seconds.tolist() == pytest.approx([2.0, 25.0], rel=1e-5)
    terms = head.loss({"staytime_logit": torch.zeros(2)}, {"label_staytime": staytime, "duration_bucket": bucket})
    assert terms["d2q_mse"].item() == pytest.approx(0.0, abs=1e-7)


def test_d2q_ties_get_their_mid_rank_and_decoding_keeps_the_order():
    table = [[0.0, 0.0, 0.0, 0.0, 4.0]]  # 5 levels (0, .25, .5, .75, 1): 0 s fills levels 0..0.75
    head = D2QHead({"staytime_quantiles": table}, weight=1.0)
    bucket = torch.zeros(5, dtype=torch.long)
    # 0 s: middle of its run (0 + 0.75) / 2; 2 s: between 0 s (last at 0.75) and 4 s (at 1); outside: 0 / 1
    labels = head.percentile(torch.tensor([0.0, 2.0, 4.0, 9.0, -1.0]), bucket)
    assert labels.tolist() == pytest.approx([0.375, 0.875, 1.0, 1.0, 0.0])
    # decoding goes through the knots (0.375, 0 s) and (1, 4 s): a table value's label decodes to itself
    q = torch.tensor([0.1, 0.375, 0.6875, 1.0 - 1e-9], dtype=torch.float64)
    seconds, _ = head.decode({"staytime_logit": torch.logit(q)}, {"duration_bucket": bucket[:4]})
    assert seconds.tolist() == pytest.approx([0.0, 0.0, 2.0, 4.0], abs=1e-6)


def test_d2q_labels_are_mid_rank_percentiles_on_a_zero_inflated_bucket():
    rng = np.random.default_rng(0)
    n = 2000
    staytime = np.where(rng.random(n) < 0.87, 0.0, np.round(rng.exponential(20.0, n), 1))  # ties at 0 and elsewhere
    bucket = rng.integers(1, 3, n)
    levels = 101
    table = duration_quantiles(pl.DataFrame({"staytime": staytime, "duration_bucket": bucket}), buckets=3,
                               levels=levels)
    head = D2QHead({"staytime_quantiles": table}, weight=1.0)
    labels = head.percentile(torch.tensor(staytime), torch.tensor(bucket)).numpy()
    for b in (1, 2):  # brute force: percentile (rank - 1) / (n - 1), tied rows share the average of their ranks
        values = staytime[bucket == b]
        below = (values[:, None] > values[None, :]).sum(1)
        equal = (values[:, None] == values[None, :]).sum(1)
        exact = (below + (equal - 1) / 2) / (len(values) - 1)
        assert np.abs(labels[bucket == b] - exact).max() <= 1 / (levels - 1)  # table resolution: one level step
        assert np.abs(labels[bucket == b][values == 0] - exact[values == 0]).max() <= 0.5 / (levels - 1)
        assert 0.4 < labels[bucket == b][values == 0][0] < 0.45  # not 0: the zeros share their middle rank
    # distinct predicted percentiles inside the table's range decode to distinct staytimes, in the same order
    logits = torch.linspace(-0.2, 3.0, 500, dtype=torch.float64)
    seconds, _ = head.decode({"staytime_logit": logits}, {"duration_bucket": torch.ones(500, dtype=torch.long)})
    assert seconds.unique().numel() == 500 and bool((seconds.diff() > 0).all())


def brute_per_user(score, relevant, user, k=None):
    """Per user: rank the user's rows by score (descending, ties in row order); nDCG@k or (k=None) MRR; users
    without a relevant row are skipped; mean over users."""
    values = []
    for u in dict.fromkeys(user):
        rows = [i for i in range(len(user)) if user[i] == u]
        ranked = [relevant[i] for i in sorted(rows, key=lambda i: -score[i])]  # sorted() is stable
        if not any(ranked):
            continue
        if k is None:
            values.append(1 / (ranked.index(1) + 1))
        else:
            dcg = sum(r / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
            ideal = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(ranked, reverse=True)[:k]))
            values.append(dcg / ideal)
    return sum(values) / len(values)


def test_per_user_video_ranking_matches_brute_force():
    user = [7, 7, 7, 7, 3, 3, 3, 9, 9, 5, 5, 5, 5, 5, 5]
    score = [0.2, 1.5, 1.5, -3.0, 4.0, 0.0, 2.0, 1.0, 2.0, 0.3, 0.1, 0.9, 0.9, -1.0, 0.5]  # ties inside users 7, 5
    relevant = [1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 0]  # user 9 has no long view: skipped
    staytime = [30.0 * r + i for i, r in enumerate(relevant)]
    values = staytime_metrics(*(np.array(x, dtype=float) for x in (staytime, staytime, relevant, score, user)))
    for k in (1, 3, 5):
        assert values[f"ndcg@{k}/video_per_user"] == pytest.approx(brute_per_user(score, relevant, user, k))
    assert values["mrr/video_per_user"] == pytest.approx(brute_per_user(score, relevant, user))
    # the head scores with its long-view score (WLR: the companion logit) and writes definitions for them
    head = WLRStaytimeHead(SPEC, weight=1.0, companion_weight=1.0)
    batch = {"label_staytime": torch.tensor(staytime), "label_long_view": torch.tensor(relevant, dtype=torch.float32),
             "group": torch.tensor(user)}
    kept = head.collect({"staytime_logit": torch.zeros(len(user)), "companion_logit": torch.tensor(score)}, batch)
    assert head.metrics(kept)["mrr/video_per_user"] == pytest.approx(values["mrr/video_per_user"])
    assert {"ndcg@k/video_per_user", "mrr/video_per_user"} <= set(head.definitions())


def test_comment_ranking_metrics_and_losses():
    head = CommentRankingHead(SPEC, user_specific_weight=1.0, user_agnostic_weight=1.0)
    user = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    kept = {"user": user, "agnostic": user.clone(), "clicked": torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]),
            "score": torch.tensor([[4.0, 3, 2, 1], [4.0, 3, 2, 1]]),
            "mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)}
    values = head.metrics(kept)
    # list 1 ranks its positive first, list 2 ranks it last of 3
    assert values["mrr/comment_user"] == pytest.approx((1 + 1 / 3) / 2)
    assert values["ndcg@1/comment_user"] == pytest.approx(0.5)
    assert 0 < values["ndcg@3/comment_agnostic"] < 1
    batch = {"comments_mask": kept["mask"], "label_clicked": kept["clicked"], "label_comment_score": kept["score"]}
    terms = head.loss({"comment_user_logits": user, "comment_agnostic_logits": user}, batch)
    assert set(terms) == {"comment_user_bce", "comment_agnostic_listmle"}
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())


TINY_TEXT_STAGE = ["+text.examples_per_task=40", "+text.lora.max_length=256", "+text.pretrain.max_texts=2000"]


def run_cli(tmp_path, *overrides):
    command = [sys.executable, "-m", "recbench", f"paths.datasets={tmp_path / 'datasets'}",
               f"paths.models={tmp_path / 'models'}", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "run" / "results.json").read_text())


def best_checkpoint_predictions(run_dir, split="test") -> torch.Tensor:
    """The staytime head's decoded predictions of a finished CLI run's best checkpoint over a split."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from recbench import config  # noqa: F401  (registers resolvers)
    from recbench.__main__ import CONF_DIR, build

    record = json.loads((run_dir / "results.json").read_text())
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in record["overrides"] if not o.startswith("hydra.")],
                      return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    datamodule, _, module = build(cfg, choices)
    module.load_state_dict(torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"])
    module.eval()
    datamodule.setup(split)
    with torch.no_grad():
        return torch.cat([module.heads["staytime"].collect(module.net(batch), batch)["pred"]
                          for batch in getattr(datamodule, f"{split}_dataloader")()])


@pytest.mark.parametrize("model,task", [("lcu", None), ("dcn", "staytime"), ("dcn", "staytime_vr"),
                                        ("dcn", "staytime_d2q")])
def test_staytime_models_run_end_to_end_on_the_replica(tmp_path, model, task):
    extra = TINY_TEXT_STAGE if model == "lcu" else []  # LCU runs the text stage first (text_embeddings=auto)
    record = run_cli(tmp_path, f"model={model}", *([f"task={task}"] if task else []), *TINY_KUAICOMT, *extra)
    test = record["metrics"]["test"]
    assert record["status"] == "finished" and record["data"] == "kuaicomt" and record["data_source"] == "synthetic"
    assert test["test/mae/staytime"] > 0 and 0 <= test["test/xauc/staytime"] <= 1
    assert 0 <= test["test/auc/long_view"] <= 1
    # the authors' per-user video ranking (relevance = long view), next to the comment ranking
    for name in ("ndcg@1", "ndcg@3", "ndcg@5", "mrr"):
        assert 0 < test[f"test/{name}/video_per_user"] <= 1
    assert record["metric_definitions"]["mrr/video_per_user"]
    if task == "staytime_d2q":  # mid-rank labels + mid-quantile decoding: no collapse to one value on 87% zeros
        assert test["test/xauc/staytime"] > 0.5
        predictions = best_checkpoint_predictions(tmp_path / "run")
        assert predictions.unique().numel() > 0.9 * len(predictions)
    if model == "lcu":
        for name, cutoff in itertools.product(("comment_user", "comment_agnostic"), (1, 3, 5)):
            assert 0 <= test[f"test/ndcg@{cutoff}/{name}"] <= 1
        assert record["metric_definitions"]["ndcg@k"]
        # the text stage ran once into models/text/<data>/<fingerprint>-<settings>/ and the run used it
        stage_dirs = list((tmp_path / "models" / "text" / "kuaicomt").glob("*/text_stage.json"))
        assert len(stage_dirs) == 1 and json.loads(stage_dirs[0].read_text())["examples"] > 0
        assert record["config"]["data"]["text_embeddings"] == "auto"
        assert record["text_embeddings"] == str(stage_dirs[0].parent / "embeddings")


@pytest.mark.parametrize("model,data", [("lcu", "kuailive"), ("moment_cross", "kuaicomt"), ("dcn", "kuailive")])
def test_model_for_another_dataset_is_refused_before_any_data_is_read(tmp_path, model, data):
    command = [sys.executable, "-m", "recbench", f"data={data}", f"model={model}", f"paths.datasets={tmp_path}",
               f"paths.models={tmp_path / 'models'}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert len(lines) == 1 and f"does not fit data '{data}'" in lines[0] and "Fix:" in lines[0]
    assert not any(tmp_path.joinpath(data).iterdir()) if tmp_path.joinpath(data).exists() else True
    assert not tmp_path.joinpath("models").exists()  # no text stage ran either


def test_text_stage_then_lcu_reads_the_embeddings(tmp_path):
    tiny = ["data.replica.n_users=300", "data.replica.n_videos=200"]
    command = [sys.executable, "-m", "recbench.text", "data=kuaicomt", f"paths.datasets={tmp_path / 'datasets'}",
               f"paths.models={tmp_path / 'models'}", f"paths.experiments={tmp_path / 'experiments'}",
               "text.examples_per_task=40", "text.lora.max_length=256", *tiny]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # one folder per dataset fingerprint and settings, the one data.text_embeddings=auto would find
    (folder,) = [p for p in (tmp_path / "models" / "text" / "kuaicomt").iterdir() if "-lm-" not in p.name]
    embeddings = folder / "embeddings"
    assert f"text embeddings: {embeddings}" in done.stdout
    manifests = {name: json.loads((embeddings / name / "manifest.json").read_text()) for name in ("video", "comment")}
    assert all(m["complete"] and m["dim"] > 0 for m in manifests.values())
    stage = json.loads((folder / "text_stage.json").read_text())
    assert stage["finetuned"] and stage["examples"] > 0
    record = run_cli(tmp_path, "model=lcu", f"data.text_embeddings={embeddings}", *TINY_KUAICOMT)
    assert record["status"] == "finished"
    assert record["config"]["data"]["text_embeddings"] == str(embeddings) == record["text_embeddings"]
    assert record["parameters"] > 0 and 0 <= record["metrics"]["test"]["test/xauc/staytime"] <= 1
