"""The training loop the text stage's two passes share (pretraining the LM, LoRA fine-tuning)."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch


def train_epochs(model: torch.nn.Module, trainable: Sequence[torch.nn.Parameter], items: Sequence[Any],
                 make_batch: Callable[[list[Any]], dict[str, torch.Tensor]], *, epochs: int, batch_size: int,
                 lr: float, weight_decay: float, warmup_ratio: float, max_grad_norm: float | None, seed: int,
                 desc: str, progress: bool) -> tuple[list[list[float]], int, float]:
    """AdamW on `trainable` with linear warm-up and decay, over a seeded shuffle of `items` per epoch,
    `make_batch` turning a list of items into the model's keyword inputs (with `labels`).

    Returns (the step losses of each epoch, the number of steps, seconds). The caller forks and seeds
    the global RNG (dropout); the shuffle has its own generator seeded with `seed`."""
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    total_steps = math.ceil(len(items) / batch_size) * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    order_rng = torch.Generator().manual_seed(seed)
    losses: list[list[float]] = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(items), generator=order_rng).tolist()
        losses.append([])
        for first in range(0, len(order), batch_size):
            loss = model(**make_batch([items[i] for i in order[first:first + batch_size]])).loss
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses[-1].append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1][-1]:.4f}")
    bar.close()
    return losses, total_steps, time.perf_counter() - start
