"""Time-ordered training (recbench/data/streaming.py) and progressive validation (recbench/progressive.py):
the stream's order, its DDP shards and resume, and that no row is scored by a model trained on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from recbench.data.datamodule import RecDataModule
from recbench.data.streaming import StreamingConfig, TimeSliceBatches, slice_of
from recbench.errors import UserInputError
from recbench.progressive import ProgressiveValidation
from tests.conftest import REPO, explain

MINUTE = 60_000


def emit_times(n: int = 2_000, seed: int = 0) -> torch.Tensor:
    """Unix-ms emit times over two days, many of them equal (reports flush on a tick grid)."""
    g = torch.Generator().manual_seed(seed)
    return 1_746_000_000_000 + torch.randint(0, 2 * 24 * 60, (n,), generator=g) * 30_000


def every_row(sampler: TimeSliceBatches) -> torch.Tensor:
    return torch.cat(list(sampler))


def test_rows_come_in_non_decreasing_emit_time_each_once_per_pass():
    times = emit_times()
    config = StreamingConfig(slice_minutes=60)
    rows = every_row(TimeSliceBatches(times, 64, config, seed=3))
    assert sorted(rows.tolist()) == list(range(len(times)))
    assert (times[rows].diff() >= 0).all()
    twice = every_row(TimeSliceBatches(times, 64, StreamingConfig(slice_minutes=60, passes=2), seed=3))
    assert torch.bincount(twice).eq(2).all()
    # each slice's two passes come before the next slice: slices never interleave
    assert (slice_of(times[twice], config.slice_ms).diff() >= 0).all()
    # the seed only breaks ties between equal emit times
    other = every_row(TimeSliceBatches(times, 64, config, seed=4))
    assert not torch.equal(rows, other) and torch.equal(times[rows], times[other])


def test_shuffling_stays_inside_a_slice():
    times = emit_times()
    config = StreamingConfig(slice_minutes=120, shuffle_within_slice=True)
    rows = every_row(TimeSliceBatches(times, 64, config, seed=0))
    assert sorted(rows.tolist()) == list(range(len(times)))
    assert (slice_of(times[rows], config.slice_ms).diff() >= 0).all()
    assert not (times[rows].diff() >= 0).all()  # shuffled inside slices


def test_batches_never_cross_a_slice_and_ddp_ranks_get_equal_counts():
    times = emit_times()
    config = StreamingConfig(slice_minutes=30)
    ranks = [TimeSliceBatches(times, 50, config, seed=1, rank=r, world=3) for r in range(3)]
    batches = [list(sampler) for sampler in ranks]
    assert len({len(b) for b in batches}) == 1 and all(len(b) == len(s) for b, s in zip(batches, ranks))
    for sampler, rank_batches in zip(ranks, batches):
        for batch, expected in zip(rank_batches, sampler.batch_slice):
            assert len(batch) <= 50 and slice_of(times[batch], config.slice_ms).eq(expected).all()
    assert sorted(torch.cat([torch.cat(b) for b in batches]).tolist()) == list(range(len(times)))


def test_resume_skips_exactly_the_consumed_batches():
    times = emit_times()
    config = StreamingConfig(slice_minutes=60, shuffle_within_slice=True, passes=2)
    full = list(TimeSliceBatches(times, 64, config, seed=5))
    resumed = TimeSliceBatches(times, 64, config, seed=5)
    resumed.resume_from(0, 17)
    assert all(torch.equal(a, b) for a, b in zip(full[17:], resumed, strict=True))


def test_settings_are_checked():
    with pytest.raises(UserInputError, match="streaming.passes"):
        StreamingConfig(passes=0)
    with pytest.raises(UserInputError, match="streaming.slice_minutes"):
        StreamingConfig(slice_minutes=0)


# ---------------------------------------------------------------------------------- on the live adapter
@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from tests.test_kuailive_adapter import adapter

    tmp = tmp_path_factory.mktemp("live")
    kuailive = adapter(tmp / "raw", tmp, source="synthetic")
    datamodule = RecDataModule(kuailive, batch_size=128, eval_batch_size=512, seed=0,
                               streaming={"slice_minutes": 60})
    datamodule.prepare()
    return datamodule


def test_progressive_validation_never_scores_a_row_after_training_on_it(live):
    """Walk the real schedule: before each training batch, the callback's due rows are scored; none of
    their exposures may have a training row among the batches already trained on."""
    tables = live.tables
    config = live.streaming
    sampler = TimeSliceBatches(tables["train_time"], live.batch_size, config, seed=0)
    callback = ProgressiveValidation(config)
    callback.plan(tables["progressive_time"])
    trained: set[int] = set()
    scored_rows = 0
    for batch, current in zip(sampler, sampler.batch_slice):
        rows = callback.order[callback.due(int(current))]
        exposures = tables["view_exposure"][tables["progressive_rows"][rows]].tolist()
        assert not trained & set(exposures)
        # ... and the model has trained on every row emitted before the scored rows' slice
        if len(rows):
            assert (slice_of(tables["progressive_time"][rows], config.slice_ms) <= current).all()
        scored_rows += len(rows)
        trained |= set(tables["view_exposure"][tables["train_rows"][batch]].tolist())
    scored_rows += len(callback.due(float("inf")))
    assert scored_rows == len(tables["progressive_rows"]) and trained  # every row scored once


def test_streaming_is_on_for_the_live_stream_and_refused_where_rows_have_no_times(live, tiny_datamodule):
    assert live.streams and live.progressive
    assert not tiny_datamodule.streams  # Tmall rows have no emit times: shuffled epochs
    forced = RecDataModule(tiny_datamodule.adapter, batch_size=64, eval_batch_size=64, seed=0,
                           streaming={"enabled": True})
    with pytest.raises(UserInputError, match="streaming.enabled=true"):
        forced.prepare()


# ---------------------------------------------------------------------------------- end to end, resume
SMOKE = ["model=mmoe", "data=kuailive", "data.replica.n_users=150", "data.replica.n_streamers=120",
         "data.replica.n_authors=150", "data.replica.live_exposures_per_user=40", "trainer.enable_progress_bar=false",
         "loader.batch_size=128", "checkpoint.every_n_steps=10", "logger=none", "streaming.slice_minutes=240",
         "streaming.warmup_hours=0", "model.net.dropout=0.2"]


def run(tmp_path, run_dir, *extra, kill=None):
    env = {k: v for k, v in os.environ.items() if k != "RECBENCH_KILL_AT"}
    env.update({"RECBENCH_KILL_AT": kill} if kill else {})
    command = [sys.executable, "-m", "recbench", *SMOKE, f"paths.datasets={tmp_path / 'datasets'}",
               f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


def test_a_streamed_run_records_progressive_metrics_and_resumes_to_the_same_numbers(tmp_path):
    done = run(tmp_path, tmp_path / "twin")
    assert done.returncode == 0, done.stderr[-3000:]
    twin = json.loads((tmp_path / "twin" / "results.json").read_text())
    assert twin["training_order"] == "stream" and twin["epochs_run"] <= 1
    progressive = twin["metrics"]["progressive"]
    assert 0 < progressive["progressive/auc/click"] < 1 and np.isfinite(progressive["progressive/gauc/mean"])
    curve = twin["progressive_curve"]
    assert [c["start"] for c in curve] == sorted(c["start"] for c in curve) and sum(c["rows"] for c in curve) > 1000
    killed = run(tmp_path, tmp_path / "killed", kill="step:30")
    assert killed.returncode == -9
    resumed = run(tmp_path, tmp_path / "killed", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert record["metrics"]["test"] == twin["metrics"]["test"]
    assert record["metrics"]["progressive"] == progressive and record["progressive_curve"] == curve


def test_a_streamed_run_under_ddp_finishes_with_equal_shards(tmp_path):
    done = run(tmp_path, tmp_path / "ddp", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
    assert done.returncode == 0, explain(done)
    record = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert record["world_size"] == 2 and record["training_order"] == "stream"
    assert np.isfinite(record["metrics"]["progressive"]["progressive/auc/mean"]) and record["progressive_curve"]
