"""(d) Id-table lookups against the memory system, and training on CUDA.

On every device (the CPU, and each visible CUDA device): the achieved bytes/s of an id-table
gather (the forward lookup) and of its table gradient (the backward), next to the device's copy
bandwidth (one large tensor copied: the practical ceiling) and, on CUDA, the card's theoretical
bandwidth from its memory clock and bus width.

Bytes counted are the least traffic the operation needs. Gather: the looked-up rows read plus
the output written, 2 x lookups x dim x 4 bytes. Gradient: the incoming gradient read plus the
rows it lands on read and written, 3 x lookups x dim x 4, plus the dense table gradient written
once. Ids are uniform over the table, so caches help only as much as the table fits in them.

Tables: the bench's DeepFM step of (a) (its fused table, 54,498 x 18; 4,096 x 47 lookups a
batch) and a full-size item table (the real Tmall log's 1,090,390 items x 64).

On CUDA, also recbench's training samples/s for (a)'s DIN and DeepFM (dense Adam) and (c)'s paper
models, with `trainer.accelerator=gpu`. With no CUDA device that part is reported as not run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from recbench.bench.common import JobFailed, fmt, table

GB = 1e9


@dataclasses.dataclass(frozen=True)
class LookupCase:
    name: str
    rows: int
    dim: int
    lookups: int


CASES = (LookupCase("CTR step of (a)", 54_498, 18, 4096 * 47),
         LookupCase("full-size item table", 1_090_390, 64, 4096 * 47))
QUICK_CASES = (LookupCase("CTR step of (a), quick", 5_000, 18, 1024 * 47),)
COPY_BYTES = 1 << 28  # 256 MiB: far beyond any cache


def seconds_per_call(function: Callable[[], Any], device, repeats: int) -> float:
    """Median wall seconds of `function()` after one warm-up call (synchronised on CUDA)."""
    import statistics

    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def copy_bandwidth(device, repeats: int, size: int = COPY_BYTES) -> float:
    import torch

    source = torch.ones(size // 4, device=device)
    target = torch.empty_like(source)
    return 2 * size / seconds_per_call(lambda: target.copy_(source), device, repeats)


def theoretical_bandwidth(device) -> float | None:
    """Bytes/s of a CUDA card from its memory clock (kHz) and bus width (bits); None if unknown."""
    import torch

    props = torch.cuda.get_device_properties(device)
    clock, width = getattr(props, "memory_clock_rate", None), getattr(props, "memory_bus_width", None)
    return 2 * clock * 1e3 * width / 8 if clock and width else None  # double data rate


def lookup_figures(case: LookupCase, device, repeats: int) -> dict[str, float]:
    """Gather and gradient bytes/s for one table on one device (recbench's own lookup code)."""
    import torch

    from recbench.models.lookup import rows_gradient

    generator = torch.Generator().manual_seed(0)
    table = torch.randn(case.rows, case.dim, generator=generator).to(device)
    ids = torch.randint(0, case.rows, (case.lookups,), generator=generator).to(device)
    grad = torch.randn(case.lookups, case.dim, generator=generator).to(device)
    if device.type == "cuda":  # what nn.functional.embedding runs there
        gradient = lambda: torch.ops.aten.embedding_dense_backward(grad, ids, case.rows, -1, False)  # noqa: E731
    else:  # recbench's CPU path (models/lookup.py)
        gradient = lambda: rows_gradient(ids.unsqueeze(1), None, grad, case.rows)  # noqa: E731
    row_bytes = case.lookups * case.dim * 4
    gather_s = seconds_per_call(lambda: table.index_select(0, ids), device, repeats)
    gradient_s = seconds_per_call(gradient, device, repeats)
    return {"gather_gb_per_s": 2 * row_bytes / gather_s / GB,
            "gradient_gb_per_s": (3 * row_bytes + case.rows * case.dim * 4) / gradient_s / GB,
            "gather_ms": gather_s * 1e3, "gradient_ms": gradient_s * 1e3}


def device_figures(device, cases, repeats: int) -> dict[str, Any]:
    import torch

    is_cuda = device.type == "cuda"
    figures: dict[str, Any] = {
        "name": torch.cuda.get_device_name(device) if is_cuda else "cpu",
        "threads": None if is_cuda else torch.get_num_threads(),
        "copy_gb_per_s": copy_bandwidth(device, repeats) / GB}
    peak = theoretical_bandwidth(device) if is_cuda else None
    figures["theoretical_gb_per_s"] = peak / GB if peak else None
    figures["cases"] = {}
    for case in cases:
        found = lookup_figures(case, device, repeats)
        found["gather_of_copy"] = found["gather_gb_per_s"] / figures["copy_gb_per_s"]
        figures["cases"][case.name] = {**dataclasses.asdict(case), **found}
    return figures


def cuda_training(work: Path, quick: bool, log, threads: int) -> dict[str, Any]:
    """(a)'s recbench DIN / DeepFM (dense Adam) and (c)'s paper models on the first CUDA device."""
    from recbench.bench import ctr, models

    settings = ctr.CTRSettings.quick() if quick else ctr.CTRSettings()
    gpu = ("trainer.accelerator=gpu", "trainer.devices=1")
    out: dict[str, Any] = {"ctr": {}}
    for model in ("din", "deepfm"):
        log(f"bench gpu: recbench {model} on CUDA")
        try:
            result = ctr.run_recbench(settings, model, "synthetic", work, threads, None, "cuda_dense",
                                      ("model.net.sparse_embeddings=false", *gpu))
            out["ctr"][model] = {"status": "ok", **ctr._trim(result)}
        except JobFailed as error:
            out["ctr"][model] = {"status": "failed", "error": str(error)}
    out["models"] = models.run(work / "models", quick, log, threads, extra=list(gpu))
    return out


def run(work: Path, quick: bool, log, threads: int) -> dict[str, Any]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        devices = [torch.device("cpu")] + [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        cases, repeats = (QUICK_CASES, 3) if quick else (CASES, 20)
        figures: dict[str, Any] = {"devices": {}}
        for device in devices:
            log(f"bench gpu: lookups and copy bandwidth on {device}")
            figures["devices"][str(device)] = device_figures(device, cases, repeats)
    finally:
        torch.set_num_threads(previous)
    if torch.cuda.is_available():
        figures["cuda_training"] = cuda_training(work, quick, log, threads)
    else:
        figures["cuda_training"] = {"status": "not run: no CUDA device visible to torch"}
    return figures


def report(figures: dict[str, Any]) -> str:
    rows = []
    for device, d in figures["devices"].items():
        for name, c in d["cases"].items():
            rows.append([f"{device} ({d['name']})", f"{name}: {c['rows']:,} x {c['dim']}, {c['lookups']:,} ids",
                         fmt(c["gather_gb_per_s"], 1), fmt(c["gradient_gb_per_s"], 1), fmt(d["copy_gb_per_s"], 1),
                         fmt(d["theoretical_gb_per_s"], 0), f"{c['gather_of_copy']:.0%}"])
    text = table("(d) id-table lookups vs memory bandwidth (GB/s; bytes = least traffic, see recbench/bench/gpu.py)",
                 ["device", "table", "gather", "gradient", "copy", "card peak", "gather/copy"], rows)
    training = figures["cuda_training"]
    if "status" in training:
        return text + f"\nCUDA training: {training['status']}"
    rows = [[f"{model} (a), dense Adam", fmt(r.get("samples_per_second")), fmt(r.get("test", {}).get("auc"), 4),
             r["status"]] for model, r in training["ctr"].items()]
    rows += [[key, fmt(r.get("samples_per_second")), "-", r["status"].split("\n")[0][:60]]
             for key, r in training["models"]["models"].items()]
    return text + "\n\n" + table("(d) training on CUDA", ["model", "train samples/s", "test AUC", "status"], rows)
