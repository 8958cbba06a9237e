"""One banner per run, and known third-party noise filtered where it comes from (issue 21, item 5)."""

from __future__ import annotations

import logging
import shutil
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from recbench.data.base import DatasetAdapter

BANNER = "using the SYNTHETIC replica"


class OneFile(DatasetAdapter):
    """The smallest adapter with a replica: one required file."""

    name = "onefile"
    required_files = ("rows.csv",)

    def replica_config(self):
        return {"rows": 2}

    def write_replica(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "rows.csv").write_text("x\n1\n2\n")


def one_file(root: Path, raw: str = "raw") -> OneFile:
    return OneFile("auto", str(root / raw), str(root / "cache"), str(root / "synthetic"))


def test_the_synthetic_banner_is_printed_once_per_process_and_dataset(tmp_path, capfd, monkeypatch):
    for _ in range(3):  # e.g. the datamodule, the text stage and a sweep's next job each resolving the source
        assert one_file(tmp_path).resolve_source()[0] == "synthetic"
    err = capfd.readouterr().err
    assert err.count(BANNER) == 1 and f"no real onefile files in {tmp_path / 'raw'}" in err

    one_file(tmp_path, raw="other_raw").resolve_source()  # another dataset folder: its own banner
    assert capfd.readouterr().err.count(BANNER) == 1

    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP worker process: rank 0 says it for the run
    assert one_file(tmp_path, raw="third_raw").resolve_source()[0] == "synthetic"
    assert BANNER not in capfd.readouterr().err


# ----------------------------------------------------------------------------- DDP: epoch-level logging
class Mean(nn.Module):
    def forward(self, batch):
        return {"score": self.weight(batch["x"]).squeeze(-1)}

    def __init__(self):
        super().__init__()
        self.weight = nn.Linear(3, 1)


class Squared(nn.Module):
    """A task head: one loss term, keeps scores and labels, one metric over the whole split."""

    def loss(self, outputs, batch):
        return {"mse": ((outputs["score"] - batch["label"]) ** 2).mean()}

    def collect(self, outputs, batch):
        return {"score": outputs["score"].detach(), "label": batch["label"]}

    def metrics(self, kept):
        return {"mse/label": float(((kept["score"] - kept["label"]) ** 2).mean())}

    def definitions(self):
        return {}


def _batches(n: int, seed: int):
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    batches = [{"x": torch.randn(8, 3, generator=generator), "label": torch.randn(8, generator=generator)}
               for _ in range(n)]
    return DataLoader(batches, batch_size=None)  # each dict is one batch


def test_no_sync_dist_warning_in_a_distributed_world_and_the_values_are_the_computed_ones(tmp_path):
    """A one-process DDP world (gloo): Lightning's condition for the warning holds (a process group, values
    logged per epoch), so an epoch-level value logged without sync_dist warns; recbench's do not."""
    import lightning as L
    import torch.distributed as dist
    from lightning.pytorch.strategies import DDPStrategy

    from recbench.module import RecModule

    class Control(RecModule):  # one extra value logged the plain way: shows the world does warn
        def on_validation_epoch_end(self):
            super().on_validation_epoch_end()
            self.log("control", 1.0)

    module = Control(Mean(), {"head": Squared()}, optimizer=partial(torch.optim.SGD, lr=0.1),
                     sparse_optimizer=partial(torch.optim.SparseAdam), gradient_clip=None)
    trainer = L.Trainer(strategy=DDPStrategy(process_group_backend="gloo"), accelerator="cpu", devices=1,
                        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, train_dataloaders=_batches(3, 0), val_dataloaders=_batches(2, 1))
            logged = {key: value.item() for key, value in trainer.callback_metrics.items()}
            trainer.test(module, dataloaders=_batches(2, 2), verbose=False)
            logged.update({key: value.item() for key, value in trainer.callback_metrics.items()})
        assert trainer.world_size == 1 and trainer.strategy.__class__.__name__ == "DDPStrategy"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    warned = sorted({str(w.message).split("'")[1] for w in caught if "sync_dist=True" in str(w.message)})
    assert warned == ["control"], warned
    for split in ("valid", "test"):  # the logged values are the ones computed over the whole split (float32)
        assert logged[f"{split}/mse/label"] == pytest.approx(module.results[split][f"{split}/mse/label"], rel=1e-6)
    assert {"train/loss_step", "train/loss_epoch", "train/mse"} <= set(logged)  # the keys as before


# ----------------------------------------------------------------------------- compile=true
COMPILER = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.mark.skipif(not COMPILER, reason="compile_net needs a C++ compiler on CPU")
def test_compile_filters_only_the_sparse_gradient_fallback_messages():
    from recbench.__main__ import compile_net

    dynamo = logging.getLogger("torch._dynamo.exc")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    dynamo.addHandler(handler)
    before = list(dynamo.filters)
    ours = lambda: [f for f in dynamo.filters if getattr(f, "__name__", "") == "not_the_sparse_gradient_fallback"]  # noqa: E731
    dynamo.filters[:] = [f for f in before if f not in ours()]  # an earlier test in this process may have compiled
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compile_net(nn.Linear(2, 1), "cpu")
            compile_net(nn.Linear(2, 1), "cpu")  # a second net (a sweep): no second filter
            for node in ("EmbeddingBackward0", "AddmmBackward0"):
                warnings.warn_explicit(f"Error detected in {node}. Traceback of forward call that caused the "
                                       "error:", UserWarning, "graph.py", 979, module="torch.autograd.graph")
            warnings.warn_explicit("Error detected in EmbeddingBackward0.", UserWarning, "mine.py", 1,
                                   module="recbench.models.mine")  # not from torch's autograd: kept
        dynamo.warning("Backend compiler exception\n  Explanation: Backend compiler `inductor` failed with "
                       "aten.nonzero.default. Adding a graph break.")
        dynamo.warning("Backend compiler exception\n  Explanation: Backend compiler `inductor` failed with "
                       "aten.something_else.default. Adding a graph break.")
        assert len(ours()) == 1
    finally:
        dynamo.removeHandler(handler)
        dynamo.filters[:] = before
    assert [str(w.message) for w in caught if str(w.message).startswith("Error detected")] == [
        "Error detected in AddmmBackward0. Traceback of forward call that caused the error:",
        "Error detected in EmbeddingBackward0."]
    assert len(seen) == 1 and "aten.something_else" in seen[0]
