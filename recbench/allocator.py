"""Keep freed large blocks in the process instead of handing them back to the OS (glibc malloc).

A training step allocates and frees the same large temporaries (activations, gradients: several
MB each) every step. glibc serves blocks above its mmap threshold with a fresh mmap and returns
them (and trims the heap top) on free, so every step faults the same pages in again: on 2 cores
that kernel time was ~25% of a DIN training step (`python -m recbench.bench --only ctr`, profiled
with py-spy). Raising the thresholds, as `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...` would
before start-up, lets malloc reuse those blocks. The process keeps its peak heap instead of
shrinking between steps; the peak itself does not grow.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (half its 64 MiB heap size)
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds high; False (and nothing changed) where malloc is not glibc's."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # musl, macOS, Windows: their allocators reuse memory their own way
        return False
    if mallopt is None:
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
