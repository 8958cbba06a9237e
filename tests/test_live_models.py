"""Live-streaming plugins (Moment&Cross, LLM-Alignment, DIN, MMoE/PLE on live data) and the live task
heads, on random batches that follow the live batch contract (no dataset needed)."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from sklearn.metrics import roc_auc_score

from recbench import config  # noqa: F401  (registers resolvers)
from recbench.__main__ import CONF_DIR
from recbench.models.layers import in_batch_infonce
from recbench.models.live_din import LiveDIN
from recbench.models.llm_alignment import LLMAlignment, quantisation_errors, residual_codes, residual_kmeans
from recbench.models.mmoe import MMoE
from recbench.models.moment_cross import MomentCross
from recbench.models.ple import PLE
from recbench.module import RecModule, split_parameters
from recbench.tasks.live import MultiTaskHead, RetrievalHead, masked_task_loss, retrieval_ranks

TASKS = ["click", "long_view", "comment", "like", "gift"]
SEQUENCES = ["short", "long", "aid", "livelong", "mixed"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster than several fighting over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_live_spec(content_dim: int = 8, length: int = 6) -> dict:
    cardinalities = {"user": 60, "user_active": 5, "live": 90, "streamer": 40, "category": 12, "hour": 25,
                     "author": 40, "kind": 3}
    return {"user_fields": ["user", "user_active"], "item_fields": ["live", "streamer", "category"],
            "context_fields": ["hour"], "cardinalities": cardinalities, "tasks": list(TASKS),
            "sequences": list(SEQUENCES), "sequence_lengths": {name: length for name in SEQUENCES},
            "content_dim": content_dim, "schemas": ["live"]}


def fake_live_batch(spec: dict, B: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch following the live batch contract (ids >= 2, sequences right-padded with 0)."""
    g = torch.Generator().manual_seed(seed)
    cards = spec["cardinalities"]
    fields = [*spec["user_fields"], *spec["item_fields"], *spec["context_fields"]]
    batch = {f: torch.randint(2, cards[f], (B,), generator=g) for f in fields}
    batch["group"] = batch["user"].clone()
    batch["read_minute"] = 29_000_000 + torch.randint(0, 120, (B,), generator=g)  # two hours in May 2025
    for task in spec["tasks"]:
        batch[f"label_{task}"] = (torch.rand(B, generator=g) < 0.4).float()
        batch[f"mask_{task}"] = (torch.rand(B, generator=g) < 0.9).float()
        batch[f"pu_{task}"] = ((torch.rand(B, generator=g) < 0.1).float() * batch[f"label_{task}"])
    if spec["content_dim"]:
        batch["live_content_emb"] = torch.randn(B, spec["content_dim"], generator=g)
        batch["streamer_longterm_emb"] = torch.randn(B, spec["content_dim"], generator=g)
    for name in spec["sequences"]:
        length = spec["sequence_lengths"][name]
        mask = torch.arange(length) < torch.randint(0, length + 1, (B, 1), generator=g)  # some rows empty
        batch[f"seq_{name}_mask"] = mask
        batch[f"seq_{name}_author"] = torch.randint(2, cards["author"], (B, length), generator=g) * mask
        batch[f"seq_{name}_category"] = torch.randint(2, cards["category"], (B, length), generator=g) * mask
        batch[f"seq_{name}_kind"] = torch.randint(1, 3, (B, length), generator=g) * mask
    return add_history_content(spec, batch, g)


def add_history_content(spec: dict, batch: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """The `hist_<name>_*` keys a batch carries with data.history_content=true: each live history room's
    candidate fields, content and long-term content."""
    cards, dim = spec["cardinalities"], spec["content_dim"]
    for name in ("livelong", "mixed"):
        mask = batch[f"seq_{name}_mask"] & (batch[f"seq_{name}_kind"] == 2)
        for field in spec["item_fields"]:
            batch[f"hist_{name}_{field}"] = torch.randint(2, cards[field], mask.shape, generator=g) * mask
        batch[f"hist_{name}_content"] = torch.randn(*mask.shape, dim, generator=g) * mask[..., None]
        batch[f"hist_{name}_longterm"] = torch.randn(*mask.shape, dim, generator=g) * mask[..., None]
        batch[f"hist_{name}_mask"] = mask
    return batch


def multitask_head(spec: dict) -> MultiTaskHead:
    return MultiTaskHead(spec, task_weights={t: 1.0 for t in spec["tasks"]}, gauc_weight="impressions")


SMALL = dict(embedding_dim=8, dropout=0.0, sparse_embeddings=True)


def build(name: str, spec: dict, **overrides):
    if name == "moment_cross":
        settings = dict(sequences=SEQUENCES, attention_dim=8, attention_heads=2, anchor="mixed",
                        contrastive_weights={"short": 0.1, "long": 0.1, "aid": 0.1, "livelong": 0.1},
                        temperature=0.1, num_levels=2, shared_experts=2, task_experts=1, expert_hidden=[16, 16],
                        tower_hidden=[8], **SMALL)
        return MomentCross(spec, **{**settings, **overrides})
    if name == "din_live":
        return LiveDIN(spec, sequences=["livelong"], attention_hidden=[16], mlp_hidden=[16], **SMALL)
    if name == "mmoe":
        return MMoE(spec, attention_hidden=[16], num_experts=3, expert_hidden=[16, 16], tower_hidden=[8], **SMALL)
    if name == "ple":
        return PLE(spec, attention_hidden=[16], num_levels=2, shared_experts=2, task_experts=1,
                   expert_hidden=[16, 16], tower_hidden=[8], **SMALL)
    settings = dict(tower_dim=16, tower_hidden=[16], user_sequences=["short", "mixed"], use_llm=True, fusion="gate",
                    retrieval_weight=1.0, retrieval_temperature=0.1, positive_task="click", use_codes=True,
                    codebook_sizes=[8, 4, 4], code_source="moment", code_dim=4, refresh_steps=5,
                    kmeans_iterations=3, kmeans_sample=1000, code_seed=0, cross_layers=2, mlp_hidden=[16], **SMALL)
    return LLMAlignment(spec, **{**settings, **overrides})


def total_loss(net, head, outputs, batch) -> torch.Tensor:
    terms = list(head.loss(outputs, batch).values())
    terms += [v for k, v in outputs.items() if k.startswith("aux_loss/")]
    return torch.stack(terms).sum()


# ----------------------------------------------------------------------------- shapes, gradients, NaN
@pytest.mark.parametrize("name", ["moment_cross", "din_live", "mmoe", "ple", "llm_alignment"])
def test_forward_backward_shapes_and_finite(name):
    spec = fake_live_spec()
    batch = fake_live_batch(spec, 32)
    torch.manual_seed(0)
    net = build(name, spec)
    outputs = net(batch)
    assert outputs["task_logits"].shape == (32, len(TASKS)) and torch.isfinite(outputs["task_logits"]).all()
    loss = total_loss(net, multitask_head(spec), outputs, batch)
    loss.backward()
    sparse, dense = split_parameters(net)
    assert sparse and all(p.grad is None or (p.grad.is_sparse and torch.isfinite(p.grad.coalesce().values()).all())
                          for p in sparse)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in dense)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dense)
    if name == "moment_cross":
        assert {f"aux_loss/cl_{x}" for x in ("short", "long", "aid", "livelong")} <= set(outputs)
    if name == "llm_alignment":
        assert outputs["user_vector"].shape == outputs["item_vector"].shape == (32, 16)
        assert outputs["semantic_codes"].shape == (32, 3) and "aux_loss/retrieval" in outputs


@pytest.mark.parametrize("name", ["moment_cross", "din_live", "mmoe", "llm_alignment"])
def test_fully_masked_sequences_give_no_nan(name):
    spec = fake_live_spec()
    batch = fake_live_batch(spec, 16, seed=1)
    for sequence in SEQUENCES:  # no short videos at all; rows 0-3 have no history of any kind
        empty = batch[f"seq_{sequence}_mask"] & (sequence != "short")
        empty[:4] = False
        batch[f"seq_{sequence}_mask"] = empty
        for part in ("author", "category", "kind"):
            batch[f"seq_{sequence}_{part}"] = batch[f"seq_{sequence}_{part}"] * empty
    torch.manual_seed(0)
    net = build(name, spec)
    outputs = net(batch)
    assert all(torch.isfinite(v.float()).all() for v in outputs.values())
    total_loss(net, multitask_head(spec), outputs, batch).backward()
    for p in net.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad.coalesce().values() if p.grad.is_sparse else p.grad).all()


def test_masked_tasks_contribute_no_gradient():
    spec = fake_live_spec()
    batch = fake_live_batch(spec, 32)
    batch["mask_gift"] = torch.zeros(32)
    batch["mask_like"][:16] = 0
    head = multitask_head(spec)
    logits = torch.randn(32, len(TASKS), requires_grad=True)
    torch.stack(list(head.loss({"task_logits": logits}, batch).values())).sum().backward()
    assert torch.all(logits.grad[:, TASKS.index("gift")] == 0)
    like = TASKS.index("like")
    assert torch.all(logits.grad[:16, like] == 0) and logits.grad[16:, like].abs().sum() > 0
    # through a whole model: the gift tower gets no gradient at all
    torch.manual_seed(0)
    net = build("moment_cross", spec, contrastive_weights={})
    total_loss(net, head, net(batch), batch).backward()
    gift_tower = net.towers[TASKS.index("gift")]
    assert all(p.grad is None or torch.all(p.grad == 0) for p in gift_tower.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.towers[0].parameters())


def test_pu_loss_equals_the_formula():
    z = torch.tensor([0.3, -1.2, 2.0, 0.5, -0.7])
    label = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    pu = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    p = torch.sigmoid(z).double().tolist()
    bce = lambda p, y: -(y * math.log(p) + (1 - y) * math.log(1 - p))  # noqa: E731
    pu_term = lambda p: -(math.log(p) - math.log(1 - p))  # noqa: E731
    expected = [pu_term(p[0]), bce(p[1], 0), pu_term(p[2]), bce(p[3], 1)]  # row 4 is masked
    assert masked_task_loss(z, label, mask, pu).item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    # the head weights it per task
    spec = fake_live_spec()
    head = MultiTaskHead(spec, task_weights={t: (2.0 if t == "comment" else 0.0) for t in TASKS}, gauc_weight="uniform")
    k = TASKS.index("comment")
    logits = torch.zeros(5, len(TASKS))
    logits[:, k] = z
    batch = {"label_comment": label, "pu_comment": pu, "mask_comment": mask}
    assert set(head.loss({"task_logits": logits}, batch)) == {"bce_comment"}
    assert head.loss({"task_logits": logits}, batch)["bce_comment"].item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_task_weights_must_name_the_data_tasks():
    with pytest.raises(ValueError, match="task_weights"):
        MultiTaskHead(fake_live_spec(), task_weights={"click": 1.0, "long_veiw": 1.0}, gauc_weight="impressions")


def test_multitask_metrics_match_sklearn_on_the_masked_rows():
    spec = fake_live_spec()
    batch = fake_live_batch(spec, 400, seed=3)
    logits = torch.randn(400, len(TASKS))
    head = multitask_head(spec)
    values = head.metrics(head.collect({"task_logits": logits}, batch))
    for k, task in enumerate(TASKS):
        rows = batch[f"mask_{task}"] > 0
        assert values[f"auc/{task}"] == pytest.approx(roc_auc_score(batch[f"label_{task}"][rows], logits[rows, k]))
        assert 0 <= values[f"gauc/{task}"] <= 1 and values[f"logloss/{task}"] > 0
    assert values["auc/mean"] == pytest.approx(np.mean([values[f"auc/{t}"] for t in TASKS]))


# ----------------------------------------------------------------------------- contrastive alignment
def test_infonce_is_lower_for_aligned_pairs_and_skips_invalid_rows():
    torch.manual_seed(0)
    anchor = torch.randn(64, 16)
    aligned = anchor + 0.1 * torch.randn(64, 16)
    valid = torch.ones(64, dtype=torch.bool)
    shuffled = aligned[torch.randperm(64)]
    assert in_batch_infonce(anchor, aligned, valid, 0.1) < in_batch_infonce(anchor, shuffled, valid, 0.1) - 1.0
    # an invalid row changes nothing; fewer than two valid rows: zero
    extra = torch.cat([anchor, torch.full((1, 16), float("nan"))]), torch.cat([aligned, torch.zeros(1, 16)])
    with_invalid = in_batch_infonce(*extra, torch.cat([valid, torch.tensor([False])]), 0.1)
    assert with_invalid.item() == pytest.approx(in_batch_infonce(anchor, aligned, valid, 0.1).item())
    assert in_batch_infonce(anchor, aligned, valid & (torch.arange(64) == 0), 0.1).item() == 0.0


def test_moment_cross_contrastive_loss_is_lower_when_sequences_align_with_the_mixed_one():
    spec = fake_live_spec()
    batch = fake_live_batch(spec, 48, seed=2)
    for part in ("author", "category", "kind", "mask"):  # short == mixed: perfectly aligned
        batch[f"seq_short_{part}"] = batch[f"seq_mixed_{part}"].clone()
    shuffled = dict(batch)
    order = torch.randperm(48, generator=torch.Generator().manual_seed(0))
    for part in ("author", "category", "kind", "mask"):
        shuffled[f"seq_short_{part}"] = batch[f"seq_short_{part}"][order]
    torch.manual_seed(0)
    net = build("moment_cross", spec)
    aligned_loss = net(batch)["aux_loss/cl_short"]
    shuffled_loss = net(shuffled)["aux_loss/cl_short"]
    assert torch.isfinite(aligned_loss) and aligned_loss < shuffled_loss
    assert "aux_loss/cl_short" not in net.eval()(batch)  # training-only term


# ----------------------------------------------------------------------------- residual k-means
def clustered_points(n: int = 600, dim: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, dim, generator=g) * 3
    return centres[torch.randint(20, (n,), generator=g)] + torch.randn(n, dim, generator=g)


def test_residual_kmeans_is_deterministic_and_reduces_error_level_by_level():
    points = clustered_points()
    fit = lambda seed: residual_kmeans(points, [16, 8, 4], 5, torch.Generator().manual_seed(seed))  # noqa: E731
    first, second = fit(3), fit(3)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert torch.equal(residual_codes(points, first), residual_codes(points, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, fit(4)))
    errors = quantisation_errors(points, first)
    assert torch.all(errors[1:] < errors[:-1]), errors
    codes = residual_codes(points, first)
    assert codes.shape == (600, 3) and codes.min() >= 0 and codes[:, 0].max() < 16 and codes[:, 2].max() < 4
    # warm start from the fitted codebooks keeps the cluster ids
    refit = residual_kmeans(points, [16, 8, 4], 2, torch.Generator().manual_seed(9), init=first)
    assert (residual_codes(points, refit)[:, 0] == codes[:, 0]).float().mean() > 0.95


def test_llm_alignment_refreshes_codes_every_refresh_steps_and_deterministically():
    spec = fake_live_spec()
    batches = [fake_live_batch(spec, 32, seed=s) for s in range(10)]

    def run() -> LLMAlignment:
        torch.manual_seed(0)
        net = build("llm_alignment", spec)
        for batch in batches:
            net(batch)
        return net

    first, second = run(), run()
    assert int(first.refreshes) == 2 and bool(first.codes_ready)  # 10 steps, refresh_steps=5
    assert torch.equal(first.author_codes, second.author_codes)
    assert all(torch.equal(a, b) for a, b in zip(first.codebooks(), second.codebooks()))
    seen = first.author_seen
    assert torch.all(first.author_codes[seen] >= 1) and torch.all(first.author_codes[~seen] == 0)
    # moment codes quantise the row's own fused vector; author codes look up the author's
    first.eval()
    with torch.no_grad():
        outputs = first(batches[0])
    assert torch.equal(outputs["semantic_codes"], residual_codes(outputs["item_vector"], first.codebooks()) + 1)


def test_llm_alignment_resumed_from_a_checkpoint_refits_the_same_codes():
    """Everything a refit reads is in the state dict: a net restored mid-way between two refreshes
    ends with the codes of the net that never stopped (the soak test found the memory missing)."""
    spec = fake_live_spec()
    batches = [fake_live_batch(spec, 32, seed=s) for s in range(10)]
    torch.manual_seed(0)
    uninterrupted = build("llm_alignment", spec)
    for batch in batches:
        uninterrupted(batch)
    torch.manual_seed(0)
    first_half = build("llm_alignment", spec)
    for batch in batches[:7]:  # a kill after step 7: one refresh done (step 5), the next at step 10
        first_half(batch)
    saved = {k: v.clone() for k, v in first_half.state_dict().items()}
    torch.manual_seed(123)  # a fresh process: other random initial weights, all overwritten by the load
    resumed = build("llm_alignment", spec)
    resumed.load_state_dict(saved)
    for batch in batches[7:]:
        resumed(batch)
    assert int(resumed.refreshes) == int(uninterrupted.refreshes) == 2
    assert torch.equal(resumed.author_codes, uninterrupted.author_codes)
    assert all(torch.equal(a, b) for a, b in zip(resumed.codebooks(), uninterrupted.codebooks()))


@pytest.mark.parametrize("name", ["moment_cross", "din_live", "mmoe", "ple", "llm_alignment"])
def test_every_model_state_is_saved_with_the_checkpoint(name):
    """A buffer left out of the state dict silently breaks exact resume; only constants rebuilt
    from the data spec at construction may be non-persistent."""
    net = build(name, fake_live_spec())
    saved = set(net.state_dict())
    constants = {"edges"}  # TimeEmbedding's bucket edges
    missing = [n for n, _ in net.named_buffers() if n not in saved and n.rsplit(".", 1)[-1] not in constants]
    assert missing == []


def test_evaluation_before_the_first_refresh_fits_codes_from_memory():
    spec = fake_live_spec()
    torch.manual_seed(0)
    net = build("llm_alignment", spec, refresh_steps=1000)
    net.eval()
    assert torch.all(net(fake_live_batch(spec, 8))["semantic_codes"] == 0)  # nothing seen: no codes
    net.train()
    net(fake_live_batch(spec, 32))
    net.eval()
    assert torch.all(net(fake_live_batch(spec, 8, seed=5))["semantic_codes"] >= 1) and bool(net.codes_ready)


# ----------------------------------------------------------------------------- ablations
def test_llm_alignment_ablations_build_and_run():
    spec = fake_live_spec()
    batch = fake_live_batch(spec, 32)
    torch.manual_seed(0)
    gated = build("llm_alignment", spec)(batch)
    assert "fusion_gate" in gated and torch.all((gated["fusion_gate"] > 0) & (gated["fusion_gate"] < 1))
    summed = build("llm_alignment", spec, fusion="sum")(batch)
    assert "fusion_gate" not in summed and torch.isfinite(summed["task_logits"]).all()
    no_codes = build("llm_alignment", spec, use_codes=False)
    out = no_codes(batch)
    assert "semantic_codes" not in out and not hasattr(no_codes, "author_memory")
    no_llm = build("llm_alignment", spec, use_llm=False).eval()
    changed = dict(batch, live_content_emb=torch.randn(32, 8), streamer_longterm_emb=torch.randn(32, 8))
    with torch.no_grad():
        assert torch.equal(no_llm(batch)["item_vector"], no_llm(changed)["item_vector"])
    # data without content embeddings: the LLM branch switches off
    bare = fake_live_spec(content_dim=0)
    out = build("llm_alignment", bare)(fake_live_batch(bare, 16))
    assert torch.isfinite(out["task_logits"]).all()
    # CGC = one extraction level
    assert len(build("moment_cross", spec, num_levels=1).levels) == 1


def test_a_sequence_the_data_lacks_is_a_key_error():
    spec = fake_live_spec()
    spec["sequences"] = ["livelong", "mixed"]
    with pytest.raises(KeyError, match="seq_short"):
        build("moment_cross", spec)
    with pytest.raises(ValueError, match="contrastive_weights"):
        build("moment_cross", fake_live_spec(), sequences=["livelong", "mixed"])


@pytest.mark.parametrize("without", SEQUENCES)
def test_each_cross_sequence_can_be_ablated(without):
    spec = fake_live_spec()
    net = build("moment_cross", spec, without=without)
    assert without not in net.sequences and without not in net.esu and len(net.sequences) == len(SEQUENCES) - 1
    # its contrastive term goes with it; without the anchor (mixed) nothing is left to align to
    expected = set() if without == "mixed" else {"short", "long", "aid", "livelong"} - {without}
    assert set(net.contrastive_weights) == expected
    out = net(fake_live_batch(spec, 16))
    assert {k.removeprefix("aux_loss/cl_") for k in out if k.startswith("aux_loss/")} == expected
    assert torch.isfinite(out["task_logits"]).all()
    with pytest.raises(ValueError, match="model.net.without='nope'"):
        build("moment_cross", spec, without="nope")


# ----------------------------------------------------------------------------- retrieval metrics
def brute_force_retrieval(user, item, streamer, positive, k):
    ids = sorted(set(streamer))
    vectors = {s: np.mean([item[i] for i in range(len(streamer)) if streamer[i] == s], axis=0) for s in ids}
    recall, ndcg = [], []
    for i in range(len(streamer)):
        if not positive[i]:
            continue
        own = float(np.dot(user[i], vectors[streamer[i]]))
        rank = sum(1 for s in ids if float(np.dot(user[i], vectors[s])) >= own)
        recall.append(1.0 if rank <= k else 0.0)
        ndcg.append(1.0 / math.log2(rank + 1) if rank <= k else 0.0)
    return float(np.mean(recall)), float(np.mean(ndcg))


def test_retrieval_metrics_equal_a_brute_force_reference():
    g = torch.Generator().manual_seed(0)
    n = 40
    user, item = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    streamer = torch.randint(0, 15, (n,), generator=g)
    tied = (streamer == 3) | (streamer == 7)
    item[tied] = item[0].clone()  # streamers 3 and 7 get the same candidate vector: a tie
    positive = torch.rand(n, generator=g) < 0.5
    positive[tied.nonzero()[0]] = True
    head = RetrievalHead(fake_live_spec(), cutoffs=[1, 3, 10], positive_task="click")
    batch = {"streamer": streamer, "label_click": positive.float(), "mask_click": torch.ones(n)}
    values = head.metrics(head.collect({"user_vector": user, "item_vector": item}, batch))
    for k in (1, 3, 10):
        recall, ndcg = brute_force_retrieval(user.double().numpy(), item.double().numpy(), streamer.tolist(),
                                             positive.tolist(), k)
        assert values[f"recall@{k}/retrieval"] == pytest.approx(recall)
        assert values[f"ndcg@{k}/retrieval"] == pytest.approx(ndcg)
    assert set(head.definitions()) == {"recall@k", "ndcg@k"} and head.loss({}, batch) == {}
    # chunking the queries changes nothing
    candidates, target = torch.randn(15, 4, dtype=torch.float64), torch.randint(0, 15, (n,))
    assert torch.equal(retrieval_ranks(user.double(), target, candidates, budget=16),
                       retrieval_ranks(user.double(), target, candidates))


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("model,task", [
    ("moment_cross", "live"), ("moment_cross_cgc", "live"), ("din_live", "live"), ("llm_alignment", "live_retrieval"),
    ("llm_alignment_no_llm", "live_retrieval"), ("llm_alignment_no_gate", "live_retrieval"),
    ("llm_alignment_no_codes", "live_retrieval"), ("llm_alignment_raw", "live_retrieval"),
    ("llm_alignment_title", "live_retrieval"), ("mmoe", "live"), ("ple", "live")])
def test_model_configs_build_and_run_with_their_task(model, task):
    overrides = [f"model={model}"] + (["task=live"] if model in ("mmoe", "ple") else [])  # data=kuailive sets it
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.task.monitor == "valid/auc/mean" and set(cfg.task.heads) >= {"multitask"}
    assert ("retrieval" in cfg.task.heads) == (task == "live_retrieval")
    spec = fake_live_spec()
    torch.manual_seed(0)
    net = instantiate(cfg.model.net, spec=spec, _convert_="all")
    heads = {name: instantiate(head, spec=spec) for name, head in cfg.task.heads.items()}
    batch = fake_live_batch(spec, 64)
    outputs = net(batch)
    loss = torch.stack([v for h in heads.values() for v in h.loss(outputs, batch).values()]
                       + [v for k, v in outputs.items() if k.startswith("aux_loss/")]).sum()
    loss.backward()
    net.eval()
    with torch.no_grad():
        outputs = net(batch)
    values = {k: v for h in heads.values() for k, v in h.metrics(h.collect(outputs, batch)).items()}
    assert 0 <= values["auc/mean"] <= 1
    if task == "live_retrieval":
        assert 0 <= values["recall@10/retrieval"] <= values["recall@50/retrieval"] <= 1


# ----------------------------------------------------------------------------- learning
def planted_batch(spec: dict, B: int) -> dict[str, torch.Tensor]:
    """Labels follow simple rules of the inputs: the streamer (click), a match between the candidate
    and the mixed history (long view), the content embedding (comment, like), the category (gift)."""
    batch = fake_live_batch(spec, B, seed=7)
    in_history = (batch["seq_mixed_author"] == batch["streamer"][:, None]).any(1)
    batch["seq_mixed_author"][: B // 2, 0] = batch["streamer"][: B // 2]
    batch["seq_mixed_mask"][: B // 2, 0] = True
    in_history = in_history | (torch.arange(B) < B // 2)
    rules = {"click": batch["streamer"] % 2 == 0, "long_view": in_history,
             "comment": batch["live_content_emb"][:, 0] > 0, "like": batch["live_content_emb"][:, 1] > 0,
             "gift": batch["category"] < 6}
    for task, rule in rules.items():
        batch[f"label_{task}"] = rule.float()
        batch[f"mask_{task}"] = torch.ones(B)
        batch[f"pu_{task}"] = torch.zeros(B)
    return batch


@pytest.mark.parametrize("name", ["moment_cross", "llm_alignment", "din_live"])
def test_a_short_training_loop_learns_a_planted_rule(name):
    spec = fake_live_spec()
    batch = planted_batch(spec, 128)
    torch.manual_seed(0)
    small = {"llm_alignment": {"refresh_steps": 25}, "moment_cross": {"num_levels": 1, "shared_experts": 1}}
    net = build(name, spec, **small.get(name, {}))
    head = multitask_head(spec)
    sparse, dense = split_parameters(net)
    optimizers = [torch.optim.Adam(dense, lr=1e-2), torch.optim.SparseAdam(sparse, lr=1e-2)]
    task_loss = lambda out: torch.stack(list(head.loss(out, batch).values())).sum()  # noqa: E731
    with torch.no_grad():
        initial = task_loss(net(batch)).item()
    for _ in range(100):
        for optimizer in optimizers:
            optimizer.zero_grad()
        total_loss(net, head, net(batch), batch).backward()
        for optimizer in optimizers:
            optimizer.step()
    net.eval()
    with torch.no_grad():
        final = task_loss(net(batch)).item()
    assert final < 0.3 * initial, (initial, final)
    if name == "llm_alignment":
        assert int(net.refreshes) == 4


def test_llm_alignment_fits_and_tests_in_lightning():
    spec = fake_live_spec()
    train = [planted_batch(spec, 64) for _ in range(6)]
    evaluation = [fake_live_batch(spec, 64, seed=s) for s in (20, 21)]
    loader = lambda batches: torch.utils.data.DataLoader(batches, batch_size=None)  # noqa: E731
    L.seed_everything(0, verbose=False)
    heads = {"multitask": multitask_head(spec),
             "retrieval": RetrievalHead(spec, cutoffs=[10, 50], positive_task="click")}
    module = RecModule(build("llm_alignment", spec, refresh_steps=4), heads,
                       optimizer=partial(torch.optim.Adam, lr=3e-3),
                       sparse_optimizer=partial(torch.optim.SparseAdam, lr=3e-3), gradient_clip=10.0)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=1, accelerator="cpu")
    trainer.fit(module, train_dataloaders=loader(train), val_dataloaders=loader(evaluation))
    trainer.test(module, dataloaders=loader(evaluation), verbose=False)
    test = module.results["test"]
    assert 0 <= test["test/auc/mean"] <= 1 and 0 <= test["test/recall@10/retrieval"] <= 1
    assert int(module.net.refreshes) == 3 and len(module.history) == 2
    assert {"recall@k", "ndcg@k", "auc", "gauc"} <= set(module.metric_definitions())
