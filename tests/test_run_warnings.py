"""A run that learnt nothing usable ends with a one-line warning: a test AUC within two standard errors of
chance on its labels, or a training loss that did not fall."""

from __future__ import annotations

import pytest
import torch

from recbench.__main__ import result_warnings
from recbench.module import TRUTH, LossTrace, chance_auc


def test_chance_level_is_hand_computed_from_the_labels():
    labels = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 16)  # column 0: 4 of 20 positive; column 1: 16 of 20
    parts = [{f"{TRUTH}label_action": labels[:12]}, {f"{TRUTH}label_action": labels[12:]}]
    variance = 21 / (12 * 4 * 16)  # (n + 1) / (12 n1 n0), the same for both columns
    assert chance_auc(parts) == pytest.approx(0.5 + 2 * (2 * variance) ** 0.5 / 2)
    assert chance_auc([{f"{TRUTH}group": torch.arange(5)}]) == 0.5  # no binary labels: no margin


def test_an_auc_at_chance_warns_and_a_good_one_does_not():
    [line] = result_warnings({"test/auc/cart": 0.9, "test/auc/mean": 0.52, "test/gauc/mean": 0.4}, 0.55, None)
    assert line.startswith("test/auc/mean = 0.5200 cannot be told from chance") and "trainer.max_epochs" in line
    assert result_warnings({"test/auc/mean": 0.7}, 0.55, None) == []
    assert result_warnings({"test/auc/click": 0.5}, 0.55, None)[0].startswith("test/auc/click")  # the only AUC


def test_a_loss_that_did_not_fall_warns_once_the_windows_do_not_overlap():
    flat, falling, short = LossTrace(window=5), LossTrace(window=5), LossTrace(window=5)
    for step in range(20):
        flat.add(1.0 + 0.01 * (step % 2))
        falling.add(1.0 / (1 + step))
    for step in range(9):
        short.add(1.0)
    [line] = result_warnings({}, 0.5, flat)
    assert line.startswith("the training loss did not fall") and "debug=overfit" in line
    assert result_warnings({}, 0.5, falling) == [] and result_warnings({}, 0.5, short) == []


def test_train_as_a_library_call_leaves_the_callers_signal_handlers_alone(tmp_path):
    """The bench worker (and any script) calls recbench.__main__.train in-process: after it returns, SIGTERM
    and SIGINT do what they did before (here: the defaults), not recbench's interruption handlers."""
    import signal

    from hydra import compose, initialize_config_dir

    from recbench import config  # noqa: F401  (registers the config resolvers)
    from recbench.__main__ import CONF_DIR, train
    from tests.test_cli import TINY

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=mmoe", *TINY, "logger=none", f"paths.datasets={tmp_path}",
                                           "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                                           "trainer.limit_test_batches=1"])
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    train(cfg, tmp_path / "run", {"model": "mmoe", "data": "tmall", "task": "actions"})
    assert {signum: signal.getsignal(signum) for signum in before} == before
