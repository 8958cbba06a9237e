"""Model plugins and task heads on a tiny replica: shapes, gradients, score derivation, learning."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from recbench.models.a2gen import A2Gen, ContextAwareAttention, action_scores
from recbench.models.mmoe import MMoE
from recbench.models.ple import PLE
from recbench.module import RecModule, split_parameters
from recbench.tasks.actions import ActionOutcomeHead, ActionSequenceHead, time_order_penalty

ENCODER = dict(embedding_dim=8, attention_hidden=[16], dropout=0.0, sparse_embeddings=True)


def build(name: str, spec):
    if name == "mmoe":
        return MMoE(spec, num_experts=3, expert_hidden=[32, 16], tower_hidden=[8], **ENCODER)
    if name == "ple":
        return PLE(spec, num_levels=2, shared_experts=2, task_experts=1, expert_hidden=[32, 16],
                   tower_hidden=[8], **ENCODER)
    generator = "explicit" if name == "a2gen_eag" else "implicit"
    return A2Gen(spec, embedding_dim=8, model_dim=16, heads=4, context_hidden=[32], generator=generator,
                 dropout=0.0, sparse_embeddings=True)


def heads_for(name: str, spec):
    if name.startswith("a2gen"):
        return {"sequence": ActionSequenceHead(spec, 1.0, 0.1, 0.1, 0.1, 0.01),
                "outcome": ActionOutcomeHead(spec, 0.0, 0.0, "impressions")}
    return {"outcome": ActionOutcomeHead(spec, 1.0, 0.1, "impressions")}


@pytest.mark.parametrize("name", ["a2gen", "a2gen_eag", "mmoe", "ple"])
def test_forward_shapes_and_sparse_gradients(name, tiny_datamodule, tiny_batch):
    spec = tiny_datamodule.spec
    torch.manual_seed(0)
    net = build(name, spec)
    outputs = net(tiny_batch)
    batch_size, n_actions = len(tiny_batch["group"]), len(spec["target_actions"])
    assert outputs["action_logit"].shape == (batch_size, n_actions)
    assert outputs["action_time"].shape == (batch_size, n_actions)
    assert torch.isfinite(outputs["action_logit"]).all() and torch.isfinite(outputs["action_time"]).all()
    if name.startswith("a2gen"):
        assert outputs["step_logits"].shape == (batch_size, spec["sequence_length"], n_actions + 1)
    loss = sum(t for head in heads_for(name, spec).values() for t in head.loss(outputs, tiny_batch).values())
    loss.backward()
    sparse, dense = split_parameters(net)
    assert sparse and all(p.grad is None or p.grad.is_sparse for p in sparse)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dense)


def test_eag_decodes_greedily_at_evaluation(tiny_datamodule, tiny_batch):
    torch.manual_seed(0)
    net = build("a2gen_eag", tiny_datamodule.spec).eval()
    with torch.no_grad():
        first = net(tiny_batch)["step_logits"]
        # evaluation must not read the labels: scrambling them changes nothing
        scrambled = dict(tiny_batch, label_seq=torch.zeros_like(tiny_batch["label_seq"]))
        second = net(scrambled)["step_logits"]
    assert torch.equal(first, second)
    net.train()
    teacher = net(tiny_batch)["step_logits"]
    assert not torch.allclose(teacher, net(scrambled)["step_logits"])  # training uses teacher forcing


def test_action_scores_follow_the_generation_probabilities():
    big = 30.0
    # step 0 certainly exits -> no action can be generated
    logits = torch.full((1, 3, 4), -big)
    logits[:, :, 0] = big
    scores = torch.sigmoid(action_scores(logits, torch.zeros(1, 3))["action_logit"])
    assert torch.all(scores < 1e-4)
    # step 0 certainly action 1 (class 2) at time 3, then exit -> action 1 ~ 1, others ~ 0
    logits = torch.full((1, 3, 4), -big)
    logits[0, 0, 2] = big
    logits[0, 1:, 0] = big
    out = action_scores(logits, torch.tensor([[3.0, 5.0, 5.0]]))
    probs = torch.sigmoid(out["action_logit"])[0]
    assert probs[1] > 0.999 and probs[0] < 1e-4 and probs[2] < 1e-4
    assert out["action_time"][0, 1] == pytest.approx(3.0)
    # two steps, each 50% action 0 / 50% exit: P(action 0) = 0.5 + 0.5 * 0.5
    logits = torch.full((1, 2, 2), 0.0)
    assert torch.sigmoid(action_scores(logits, torch.zeros(1, 2))["action_logit"])[0, 0] == pytest.approx(0.75)


def test_time_order_penalty_counts_decreases_until_first_exit():
    times = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    logits = torch.zeros(1, 4, 3)
    logits[0, :, 1] = 1.0  # never exits: decreases 3->2 and 2->0 count
    assert time_order_penalty(logits, times).item() == pytest.approx(1.0 + 2.0)
    logits[0, 2, 0] = 5.0  # exits at step 2: only the 3->2 decrease (into the exit step) counts
    assert time_order_penalty(logits, times).item() == pytest.approx(1.0)


def test_context_aware_attention_gates_heads_by_context_and_survives_empty_masks():
    torch.manual_seed(0)
    cam = ContextAwareAttention(dim=8, context_dim=4, heads=2, dropout=0.0)
    seq, context = torch.randn(3, 5, 8), torch.randn(3, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = cam(seq, context, mask=mask)
    assert out.shape == (3, 5, 8) and torch.isfinite(out).all()
    other = cam(seq, torch.randn(3, 4), mask=mask)
    assert not torch.allclose(out, other)  # the context changes the output


def fit_and_test(name, datamodule, epochs):
    L.seed_everything(0, verbose=False)
    spec = datamodule.spec
    module = RecModule(build(name, spec), heads_for(name, spec),
                       optimizer=partial(torch.optim.Adam, lr=3e-3), sparse_optimizer=partial(torch.optim.SparseAdam, lr=3e-3),
                       gradient_clip=10.0)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return module


def test_a2gen_learns_and_beats_a_random_scorer(tiny_datamodule):
    module = fit_and_test("a2gen", tiny_datamodule, epochs=2)
    test = module.results["test"]
    # a random scorer has AUC 0.5 in expectation; a learnt A2Gen must be clearly above it
    assert test["test/auc/mean"] > 0.6, test
    for action in tiny_datamodule.spec["target_actions"]:
        assert test[f"test/auc/{action}"] > 0.55, test
    # timing read off the generated sequence is better than the untrained model's
    untrained = fit_and_test("a2gen", tiny_datamodule, epochs=0).results["test"]
    assert test["test/time_mae/mean"] < untrained["test/time_mae/mean"]
    assert len(module.history) == 2 and "valid/auc/mean" in module.history[0]
