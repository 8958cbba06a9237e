"""Shared fixtures: a tiny synthetic Tmall replica, prepared once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recbench.data.datamodule import RecDataModule
from recbench.data.tmall import TmallAdapter

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_HEAD = SHARED / "data" / "tmall_ijcai15_head"

TINY_REPLICA = {"n_users": 400, "n_items": 3000, "episodes_per_user": 25.0, "seed": 0}


def tmall_adapter(root: Path, source: str = "synthetic", raw_dir: Path | None = None, **overrides) -> TmallAdapter:
    settings = dict(source=source, raw_dir=str(raw_dir or root / "raw"), cache_dir=str(root / "cache"),
                    replica_dir=str(root / "synthetic"), history_length=10, min_user_episodes=2,
                    min_count=1, dedupe=True, valid_fraction=0.1, test_fraction=0.1,
                    label_horizon_days=14, replica=TINY_REPLICA)
    settings.update(overrides)
    return TmallAdapter(**settings)


@pytest.fixture(scope="session")
def tiny_datamodule(tmp_path_factory) -> RecDataModule:
    torch.manual_seed(0)
    datamodule = RecDataModule(tmall_adapter(tmp_path_factory.mktemp("tiny")), batch_size=256,
                               eval_batch_size=2048, seed=0)
    datamodule.prepare()
    return datamodule


@pytest.fixture(scope="session")
def tiny_batch(tiny_datamodule) -> dict[str, torch.Tensor]:
    return next(iter(tiny_datamodule.train_dataloader()))


def explain(done, tail: int = 2500) -> str:
    """A failed subprocess run for an assertion message: every traceback's first and last lines (under
    DDP the other rank's is often the cause, and far from the tail), then the tail of stderr."""
    lines = done.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    blocks = []
    for start in starts[:4]:
        end = next((j for j in range(start + 1, len(lines)) if lines[j] and not lines[j].startswith(" ")), start)
        blocks.append("\n".join(lines[start:start + 3] + ["  ..."] + lines[max(start + 3, end - 6):end + 1]))
    return "\n---\n".join([f"rc={done.returncode}", *blocks, done.stderr[-tail:]])


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test leaves os.environ as it found it. An in-process Lightning DDP world sets MASTER_PORT,
    LOCAL_RANK, NODE_RANK ...; a later test's `python -m recbench trainer=ddp` subprocess inheriting them
    believes its processes are launched externally, starts no rank 1 and waits for it forever."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
