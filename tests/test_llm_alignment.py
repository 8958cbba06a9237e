"""LARM's mechanisms operate: the gate reads the author, history codes reach the score, codes are refit from
training batches only, logQ changes the retrieval loss (recbench/models/llm_alignment.py)."""

from __future__ import annotations

import pytest
import torch

from tests.test_live_models import add_history_content, build, fake_live_batch, fake_live_spec
from tests.test_live_models import one_thread  # noqa: F401  (autouse: one intra-op thread)

HISTORY = ("livelong", "mixed")


def with_history(spec: dict, batch: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Fresh history content for a batch (fake_live_batch already carries some)."""
    return add_history_content(spec, batch, torch.Generator().manual_seed(seed))


def larm(spec: dict, **overrides):
    settings = dict(history_code_sequences=list(HISTORY), user_code_sequence="mixed", attention_hidden=[8])
    return build("llm_alignment", spec, **{**settings, **overrides})


def trained(spec: dict, steps: int = 6, **overrides):
    torch.manual_seed(0)
    net = larm(spec, **overrides).train()
    for step in range(steps):
        net(with_history(spec, fake_live_batch(spec, 64, seed=step), seed=step))
    return net.eval()


def test_the_gate_reads_the_author_not_the_content():
    spec = fake_live_spec()
    net = larm(spec).eval()
    batch = with_history(spec, fake_live_batch(spec, 32))
    gate = net(batch)["fusion_gate"]
    other_content = {**batch, "live_content_emb": torch.randn_like(batch["live_content_emb"])}
    assert torch.equal(net(other_content)["fusion_gate"], gate)
    other_author = {**batch, "streamer": (batch["streamer"] + 1) % spec["cardinalities"]["streamer"]}
    assert not torch.allclose(net(other_author)["fusion_gate"], gate)


def test_history_codes_reach_the_ranker_and_the_user_tower():
    spec = fake_live_spec()
    net = trained(spec)
    batch = with_history(spec, fake_live_batch(spec, 64, seed=99), seed=99)
    before = net(batch)
    changed = dict(batch)
    for name in HISTORY:  # other content in the history rooms -> other codes
        changed[f"hist_{name}_content"] = torch.randn_like(batch[f"hist_{name}_content"]) * 3
    after = net(changed)
    assert not torch.equal(net.history_codes(batch, "mixed")[0], net.history_codes(changed, "mixed")[0])
    assert not torch.allclose(before["task_logits"], after["task_logits"])
    assert not torch.allclose(before["user_vector"], after["user_vector"])
    # without code attention and user-tower codes, the history content changes nothing
    plain = trained(spec, history_code_sequences=[], user_code_sequence=None)
    assert torch.equal(plain(batch)["task_logits"], plain(changed)["task_logits"])


def test_codes_are_refit_from_training_batches_only():
    spec = fake_live_spec()
    net = trained(spec, refresh_steps=3)
    state = {k: v.clone() for k, v in net.state_dict().items()
             if k.startswith(("codebook_", "author_", "codes_ready", "refreshes", "training_steps"))}
    for seed in range(5):  # validation / test batches: scored, never remembered or refit from
        net(with_history(spec, fake_live_batch(spec, 64, seed=100 + seed), seed=100 + seed))
    for key, value in state.items():
        assert torch.equal(net.state_dict()[key], value), key


def test_history_codes_need_the_history_content_keys():
    spec = fake_live_spec()
    net = trained(spec)
    bare = {k: v for k, v in fake_live_batch(spec, 16).items() if not k.startswith("hist_")}
    with pytest.raises(ValueError, match="data.history_content=true"):
        net(bare)


def test_logq_correction_changes_the_retrieval_loss():
    spec = fake_live_spec()
    batch = with_history(spec, fake_live_batch(spec, 64))
    losses = []
    for logq in (False, True):
        torch.manual_seed(0)
        net = larm(spec, logq_correction=logq).train()
        net(with_history(spec, fake_live_batch(spec, 64, seed=5)))  # counts from an earlier batch
        torch.manual_seed(1)
        losses.append(float(net(batch)["aux_loss/retrieval"].detach()))
    assert losses[0] != pytest.approx(losses[1], abs=1e-4)


def test_live_retrieval_ranks_among_the_rooms_of_the_moment_as_they_were_then():
    from recbench.tasks.live import live_retrieval_ranks

    # rows: (minute, streamer, item vector); window 30 min. Streamer 7 shows content A at minute 0 and
    # content B at minute 20; the query at minute 20 (streamer 7, its own row) likes B.
    minute = torch.tensor([0, 5, 20, 21, 40])
    streamer = torch.tensor([7, 8, 7, 9, 8])
    a, b, c = [1.0, 0.0], [0.0, 1.0], [0.6, 0.6]
    item = torch.tensor([a, c, b, c, [0.0, 1.0]])
    query = torch.tensor([False, False, True, False, False])
    kept = {"item": item, "streamer": streamer, "minute": minute, "query_row": query,
            "query_user": torch.tensor([[0.0, 1.0]])}
    ranks, pool = live_retrieval_ranks(kept, 30)
    # window 0: streamers 7 (row at minute 20: B, score 1), 8 (c: 0.6), 9 (c: 0.6); the minute-40 row is not live then
    assert ranks.tolist() == [1.0] and pool.tolist() == [3]
    # averaged over the split (the global metric), streamer 7 would be (A + B) / 2: score 0.5 < 0.6
    assert float(((item[0] + item[2]) / 2) @ kept["query_user"][0]) < 0.6


def test_kmeans_revives_empty_clusters_after_a_collapsed_warm_start():
    from recbench.models.llm_alignment import kmeans, nearest_centroid

    g = torch.Generator().manual_seed(0)
    points = torch.randn(2000, 8, generator=g)
    collapsed = torch.zeros(64, 8)
    collapsed[0] = 1.0  # the first fit saw near-identical vectors: every centroid in one spot
    fitted = kmeans(points, 64, 5, torch.Generator().manual_seed(1), init=collapsed)
    assert len(torch.unique(nearest_centroid(points, fitted))) > 48  # most ids in use again
