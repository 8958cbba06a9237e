"""AdaTask (recbench/optim/adatask.py) and the per-task gradient split (recbench/optim/task_split.py):
the update against a hand-written formula, one task = Adam, shared-parameter detection on MMoE and PLE,
refusals, and one training step through the real Hydra config."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf, open_dict
from torch import nn

from recbench import config  # noqa: F401  (registers resolvers)
from recbench.__main__ import CONF_DIR, build
from recbench.errors import UserInputError
from recbench.module import split_parameters
from recbench.optim.adatask import AdaTask
from recbench.optim.task_split import TaskGradientSplit

LR, BETAS, EPS = 0.01, (0.9, 0.999), 1e-8


class TwoTasks(nn.Module):
    """A shared layer under two one-output towers: outputs `task_logits` [B, 2]."""

    def __init__(self, extra_output: bool = False) -> None:
        super().__init__()
        self.shared = nn.Linear(3, 4)
        self.towers = nn.ModuleList(nn.Linear(4, 1) for _ in range(2))
        self.extra_output = extra_output

    def forward(self, x):
        h = torch.tanh(self.shared(x))
        out = {"task_logits": torch.cat([tower(h) for tower in self.towers], 1)}
        if self.extra_output:
            out["aux_loss/penalty"] = h.pow(2).mean()
        return out


def task_losses(logits, y):
    """Per-task losses; their sum is the training loss (a head's per-task terms)."""
    return [((logits[:, t] - y[:, t]) ** 2).mean() * (t + 1) for t in range(logits.shape[1])]


def adatask_step(net, split, optimizer, x, y):
    outputs = net(x)
    read = split.detached(outputs)
    loss = torch.stack(task_losses(read["task_logits"], y)).sum()
    optimizer.zero_grad(set_to_none=True)
    optimizer.set_task_gradients(split.backward(outputs, read, loss))
    optimizer.step()


def test_update_equals_the_formula():
    torch.manual_seed(0)
    net = TwoTasks()
    reference = {name: p.detach().clone() for name, p in net.named_parameters()}
    params = list(net.parameters())
    split = TaskGradientSplit(["task_logits"], params, [])
    optimizer = AdaTask(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0, task_outputs=["task_logits"])
    moments = {}  # (name, task or None) -> (m, v) of the hand-written update
    for step in range(1, 4):
        x, y = torch.randn(16, 3), torch.randn(16, 2)
        # hand-written: g_t = d L_t / d theta from a fresh copy of the reference weights
        copy = TwoTasks()
        copy.load_state_dict(reference)
        per_task = [torch.autograd.grad(loss, list(copy.parameters()), retain_graph=True, allow_unused=True)
                    for loss in task_losses(copy(x)["task_logits"], y)]
        for i, (name, value) in enumerate(copy.named_parameters()):
            grads = [g[i] for g in per_task]
            shared = name.startswith("shared")
            tasks = [(t, grads[t]) for t in range(2)] if shared else [(None, sum(g for g in grads if g is not None))]
            update = torch.zeros_like(value)
            for t, g in tasks:
                m, v = moments.get((name, t), (torch.zeros_like(g), torch.zeros_like(g)))
                m, v = BETAS[0] * m + (1 - BETAS[0]) * g, BETAS[1] * v + (1 - BETAS[1]) * g * g
                moments[(name, t)] = (m, v)
                m_hat, v_hat = m / (1 - BETAS[0] ** step), v / (1 - BETAS[1] ** step)
                update += m_hat / (v_hat.sqrt() + EPS)
            reference[name] = value.detach() - LR * update
        adatask_step(net, split, optimizer, x, y)
        for name, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), reference[name], rtol=1e-5, atol=1e-7, msg=f"{name} step {step}")
    assert [p for p in split.shared] == [net.shared.weight, net.shared.bias]


def test_task_gradients_add_up_to_the_full_gradient():
    torch.manual_seed(1)
    net, x, y = TwoTasks(), torch.randn(8, 3), torch.randn(8, 2)
    full = torch.autograd.grad(torch.stack(task_losses(net(x)["task_logits"], y)).sum(), list(net.shared.parameters()))
    split = TaskGradientSplit(["task_logits"], list(net.parameters()), [])
    outputs = net(x)
    read = split.detached(outputs)
    task_grads = split.backward(outputs, read, torch.stack(task_losses(read["task_logits"], y)).sum())
    for p, g in zip(net.shared.parameters(), full):
        torch.testing.assert_close(task_grads[p].sum(0), g)
        assert not torch.allclose(task_grads[p][0], task_grads[p][1])


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_one_task_equals_adam(weight_decay):
    torch.manual_seed(2)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = AdaTask(a.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay, task_outputs=["y"])
    adam = torch.optim.Adam(b.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay)
    for step in range(5):
        x = torch.randn(7, 5)
        grads = torch.autograd.grad(a(x).pow(2).sum(), [a.weight, a.bias])
        b(x).pow(2).sum().backward()
        a.bias.grad = grads[1]  # the bias as a task-specific parameter (.grad) ...
        ours.set_task_gradients({a.weight: grads[0].unsqueeze(0)})  # ... the weight as "shared" with one task
        ours.step()
        adam.step()
        adam.zero_grad()
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)


def test_refusals_are_one_line():
    net = TwoTasks()
    split = TaskGradientSplit(["task_logits"], list(net.parameters()), [])
    one = {"task_logits": net(torch.randn(4, 3))["task_logits"][:, :1]}
    with pytest.raises(UserInputError, match="needs at least two tasks") as refused:
        split.backward(one, split.detached(one), one["task_logits"].sum())
    assert "\n" not in str(refused.value) and "Fix:" in str(refused.value)
    # a loss that also reads an output with no task axis (an auxiliary term) cannot be split by task
    net = TwoTasks(extra_output=True)
    split = TaskGradientSplit(["task_logits"], list(net.parameters()), [])
    outputs = net(torch.randn(4, 3))
    read = split.detached(outputs)
    with pytest.raises(UserInputError, match="aux_loss/penalty") as refused:
        split.backward(outputs, read, read["task_logits"].sum() + read["aux_loss/penalty"])
    assert "\n" not in str(refused.value)
    with pytest.raises(UserInputError, match="returns none of them"):
        TaskGradientSplit(["action_logit"], list(net.parameters()), []).backward(outputs, read, read["task_logits"].sum())


# ---------------------------------------------------------------------- the real config, a tiny replica


def compose_run(root, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data=tmall", f"paths.datasets={root / 'datasets'}",
                                           f"paths.experiments={root / 'runs'}", "trainer.max_epochs=1",
                                           "trainer.enable_progress_bar=false", "loader.batch_size=128",
                                           "loader.eval_batch_size=512", *overrides], return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
        OmegaConf.update(cfg, "data.replica", get_class(cfg.data._target_).smoke_replica, merge=True)
    return cfg, choices


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("adatask")


def one_step(cfg, choices):
    """One training step of the real module under a Lightning Trainer (no validation)."""
    L.seed_everything(0, verbose=False)
    datamodule, _, module = build(cfg, choices)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, limit_train_batches=1,
                          limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False)
    before = {name: p.detach().clone() for name, p in module.net.named_parameters()}
    trainer.fit(module, datamodule=datamodule)
    return module, before


@pytest.mark.parametrize("model", ["mmoe", "ple"])
def test_shared_parameters_of_mmoe_and_ple(root, model):
    cfg, choices = compose_run(root, f"model={model}", "optimizer=adatask")
    torch.manual_seed(0)
    datamodule, _, module = build(cfg, choices)
    net = module.net
    sparse, dense = split_parameters(net)
    split = TaskGradientSplit(cfg.optimizer.dense.task_outputs, dense, sparse)
    outputs = net(next(iter(datamodule.train_dataloader())))
    split.detect(*split.task_tensors(outputs)[1:])
    shared = {name for name, p in net.named_parameters() if any(p is q for q in split.shared)}
    specific = {name for name, p in net.named_parameters() if any(p is q for q in split.specific)}
    assert split.n_tasks == 3  # cart, purchase, favourite
    assert not any(name.startswith("towers.") for name in shared)
    assert any(name.startswith("encoder.") for name in shared)
    if model == "mmoe":  # experts and encoder shared; each gate and tower belongs to one task
        assert {n for n in shared if n.startswith("experts.")} == {n for n, _ in net.named_parameters()
                                                                  if n.startswith("experts.")}
        assert specific and all(name.startswith(("gates.", "towers.")) for name in specific), specific
    else:  # top-level task experts and gates belong to one task; lower levels feed every task via the shared gate
        top = len(net.levels) - 1
        assert any(name.startswith(f"levels.{top}.shared.") for name in shared)
        assert any(name.startswith(f"levels.{top}.own.0.") for name in specific)
        assert any(name.startswith("levels.0.own.0.") for name in shared)


def test_one_step_through_the_hydra_config(root):
    cfg, choices = compose_run(root, "model=mmoe", "optimizer=adatask")
    assert cfg.optimizer.dense._target_ == "recbench.optim.adatask.AdaTask"
    named, _ = compose_run(root, "model=mmoe_adatask")
    assert OmegaConf.to_container(named.optimizer) == OmegaConf.to_container(cfg.optimizer)
    adatask, before = one_step(cfg, choices)
    adam, _ = one_step(*compose_run(root, "model=mmoe"))
    after = dict(adatask.net.named_parameters())
    baseline = dict(adam.net.named_parameters())
    moved = {name for name, p in after.items() if not torch.equal(before[name], p.detach())}
    assert all(name in moved for name in after if name.startswith(("experts.", "gates.", "towers.")))
    shared = [name for name, p in after.items() if any(p is q for q in adatask._split.shared)]
    assert len([name for name in shared if name in moved]) > len(shared) // 2
    # shared parameters: the sum of per-task Adam steps differs from one Adam step on the summed gradient
    assert any(not torch.allclose(after[name], baseline[name]) for name in shared)
    # task-specific ones get plain Adam on the same gradient: the same first step
    for name, p in after.items():
        if any(p is q for q in adatask._split.specific):
            torch.testing.assert_close(p, baseline[name], rtol=1e-5, atol=1e-6)
