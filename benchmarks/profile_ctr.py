"""Where a CTR training step spends its time: `python benchmarks/profile_ctr.py [din|deepfm] [--sparse]`.

Builds the benchmark's Tmall CTR data and model exactly as `python -m recbench.bench --only ctr`
does (recbench/bench/ctr.py: CTRSettings), then prints three figures for one epoch of batches:
  1. the data path alone (iterating the training DataLoader): samples/s;
  2. a plain PyTorch loop (forward, loss, backward, clip, optimizer steps; no Lightning) over the
     same batches, in deterministic mode as recbench trains on CPU: samples/s;
  3. that loop's milliseconds per batch by phase (forward, backward, gradient clip, optimizer);
  4. the torch profiler's top operators over 20 of those steps.
Compare (2) with the bench's samples/s to see what the Lightning loop adds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils import deterministic as torch_deterministic

from recbench.__main__ import build
from recbench.bench import ctr
from recbench.bench.worker import compose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["din", "deepfm"])
    parser.add_argument("--sparse", action="store_true", help="SparseAdam id tables (recbench's default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=20, help="how many operators to list")
    parser.add_argument("--shapes", action="store_true", help="one line per operator and input shapes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch_deterministic.fill_uninitialized_memory = False  # as recbench.__main__.train

    overrides = ctr.recbench_overrides(ctr.CTRSettings(), args.model, "synthetic",
                                       Path("experiments/bench/work/profile/run"))
    if not args.sparse:
        overrides.append("model.net.sparse_embeddings=false")
    cfg, choices = compose(overrides)
    datamodule, _, module = build(cfg, choices)
    datamodule.setup("fit")

    started = time.perf_counter()
    batches = list(datamodule.train_dataloader())
    rows = sum(len(next(iter(b.values()))) for b in batches)
    print(f"data path: {len(batches)} batches, {rows:,} rows, {rows / (time.perf_counter() - started):,.0f} samples/s")

    net, optimizers = module.net, module.configure_optimizers()
    net.train()

    def step(batch: dict[str, torch.Tensor]) -> None:
        outputs = net(batch)
        terms = [v for head in module.heads.values() for v in head.loss(outputs, batch).values()]
        loss = torch.stack(terms).sum()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module._clipped, float(cfg.optimizer.gradient_clip))
        for optimizer in optimizers:
            optimizer.step()

    for batch in batches[:5]:  # warm-up
        step(batch)
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    seconds = time.perf_counter() - started
    print(f"plain PyTorch loop: {rows / seconds:,.0f} samples/s ({seconds / len(batches) * 1000:.1f} ms per batch)")
    print("per batch, by phase: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in phase_times(
        net, module, optimizers, batches, float(cfg.optimizer.gradient_clip)).items()))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for batch in batches[:20]:
            step(batch)
    total = sum(e.self_cpu_time_total for e in profiler.key_averages())
    print(f"top operators over 20 steps (self CPU time, input shapes):")
    rows = sorted(profiler.key_averages(group_by_input_shape=args.shapes), key=lambda e: -e.self_cpu_time_total)
    for event in rows[:args.top]:
        shapes = f" {event.input_shapes}" if args.shapes else ""
        print(f"  {event.self_cpu_time_total / total:6.1%}  {event.count:5d} calls  {event.key:<32s}{shapes}")


def phase_times(net, module, optimizers, batches, clip: float) -> dict[str, float]:
    """Mean milliseconds per batch of forward (with loss), backward, gradient clip and optimizer steps."""
    totals = dict.fromkeys(("forward", "backward", "clip", "optimizer"), 0.0)
    for batch in batches:
        marks = [time.perf_counter()]
        outputs = net(batch)
        loss = torch.stack([v for head in module.heads.values() for v in head.loss(outputs, batch).values()]).sum()
        marks.append(time.perf_counter())
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(module._clipped, clip)
        marks.append(time.perf_counter())
        for optimizer in optimizers:
            optimizer.step()
        marks.append(time.perf_counter())
        for name, start, end in zip(totals, marks, marks[1:]):
            totals[name] += end - start
    return {name: seconds / len(batches) * 1000 for name, seconds in totals.items()}


if __name__ == "__main__":
    main()
