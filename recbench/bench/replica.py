"""The full-size Tmall replica log (the real file's 54.9M rows), written in bounded memory by
`write_tmall_replica` in blocks of users (recbench/data/tmall_replica.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from recbench.data import tmall_replica as R

# The real log: 54,925,330 rows, 424,170 users, 1,090,390 items, 1,658 categories, 4,995 sellers,
# 8,443 brands. episodes_per_user is set so that the replica's rows per user (~1.7 rows per
# episode) match the real file's 129.5 (calibrated: 54.9M +- 1% rows).
FULL_SIZE = R.TmallReplicaConfig(n_users=424_170, n_items=1_090_390, n_categories=1_658, n_sellers=4_995,
                                 n_brands=8_443, episodes_per_user=75.6, seed=0)
REAL_ROWS = 54_925_330


def write_full_size(out_dir: Path, config: R.TmallReplicaConfig,
                    log: Callable[[str], None] | None = None) -> dict:
    """Write the replica (blocks of 25,000 users); return rows, seconds and bytes of the log."""
    started = time.perf_counter()
    R.write_tmall_replica(out_dir, config, users_per_block=25_000, progress=log)
    rows = pl.scan_csv(out_dir / R.LOG_FILE).select(pl.len()).collect().item()
    return {"rows": rows, "seconds": time.perf_counter() - started, "bytes": (out_dir / R.LOG_FILE).stat().st_size}
