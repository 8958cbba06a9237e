"""DDP with two CPU processes (gloo): exact, gathered evaluation.

The DDP run's test metrics must equal a single-process evaluation of the same checkpoint: every
test row is scored exactly once across the ranks and the gathered predictions are in the
single-process order, so grouped metrics (GAUC) see whole users.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from recbench.data.datamodule import RecDataModule, RowBlocks, ShardedEpochBatches, eval_block
from tests.conftest import REPO, explain

TINY = ["data=tmall", "model=mmoe", "data.replica.n_users=150", "data.replica.n_items=1500",
        "data.replica.episodes_per_user=15", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def test_training_shards_cover_each_round_once_and_have_equal_length():
    def batches(sampler) -> list[list[int]]:
        out = list(sampler)
        assert all(isinstance(b, torch.Tensor) and b.dtype == torch.int64 for b in out)  # no per-row objects
        return [b.tolist() for b in out]

    shards = [batches(ShardedEpochBatches(103, 10, seed=3, rank=r, world=3)) for r in range(3)]
    assert {len(s) for s in shards} == {3}  # 11 batches -> 3 full rounds of 3 ranks, the rest dropped
    rows = [row for shard in shards for batch in shard for row in batch]
    assert len(rows) == len(set(rows)) == 90
    again = ShardedEpochBatches(103, 10, seed=3, rank=1, world=3)
    assert batches(again) == shards[1]  # same seed and epoch -> same batches
    again.set_epoch(1)
    assert batches(again) != shards[1]


def test_evaluation_blocks_partition_the_rows_in_order():
    blocks = [eval_block(10, r, 3) for r in range(3)]
    assert [row for block in blocks for row in block] == list(range(10))
    # evaluation batches are contiguous index tensors over a block, the last one short
    assert [b.tolist() for b in RowBlocks(blocks[1], 3)] == [[3, 4, 5], [6]]
    assert [b.tolist() for b in RowBlocks(range(10), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_assembly_workers_give_the_same_batches_in_the_same_order(tiny_datamodule):
    """loader.num_workers moves batch assembly into worker processes; the sampler (and so the
    batch order) stays in the training process, so the batches are identical."""
    workers = RecDataModule(tiny_datamodule.adapter, batch_size=256, eval_batch_size=2048, seed=0,
                            num_workers=1, pin_memory=False)
    workers.prepare()
    for loader in ("train_dataloader", "val_dataloader"):
        here = list(getattr(tiny_datamodule, loader)())
        there = list(getattr(workers, loader)())
        assert len(here) == len(there) > 0
        for a, b in zip(here, there):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pin_memory_setting_is_checked_and_auto_is_off_without_cuda(tiny_datamodule):
    import pytest

    with pytest.raises(ValueError, match="loader.pin_memory must be true, false or auto"):
        RecDataModule(tiny_datamodule.adapter, batch_size=8, eval_batch_size=8, seed=0, pin_memory="yes")
    assert tiny_datamodule._pinned() is False  # no trainer attached: nothing to pin for


def test_ddp_two_cpu_processes_match_a_single_process_evaluation(tmp_path):
    overrides = [*TINY, f"paths.datasets={tmp_path / 'datasets'}", "logger=none"]
    command = [sys.executable, "-m", "recbench", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
               f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, explain(done)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "finished" and record["world_size"] == 2

    import lightning as L

    from recbench.__main__ import build

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    choices = {"model": "mmoe", "data": "tmall", "task": "actions"}
    datamodule, _, module = build(cfg, choices)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, ckpt_path=str(tmp_path / "run" / "checkpoints" / "best.ckpt"),
                 verbose=False)
    single = module.results["test"]
    ddp = record["metrics"]["test"]
    assert single.keys() == ddp.keys()
    np.testing.assert_allclose([ddp[k] for k in sorted(ddp)], [single[k] for k in sorted(single)], rtol=0, atol=1e-6)
    assert torch.distributed.is_available()
