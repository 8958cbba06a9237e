"""Causal-LM pretraining of the embedded tiny LM on the dataset's own texts, and held-out perplexity.

`build_tiny_lm` gives a model with random weights: fine-tuning it with LoRA, or exporting its
embeddings untuned, compares two models that know nothing of the language. `pretrain_causal_lm`
first trains every weight on next-token prediction over the corpus texts (captions and comments,
one text per sequence, BOS + text + EOS), so that both arms of the fine-tuning ablation start from
a model that knows the domain, as a real pretrained LLM would. A user's local Hugging Face model
(`text.model`) is already pretrained and skips this step by default (`text.pretrain.enabled: auto`).

`perplexity` is exp(mean next-token loss) over the real tokens of some texts (each text scored on
its own; the BOS is given, the EOS is predicted). `pretrain_causal_lm` measures it on `held_out`
texts drawn before training and kept out of it, before and after, and records both.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbench.errors import UserInputError
from recbench.records import atomic_folder, write_json_atomic
from recbench.text.lm import TINY_MARKER, _portable_tokenizer_class, load_lm
from recbench.text.loop import train_epochs

STATS = "pretrain_stats.json"  # inside the pretrained folder: settings key, perplexities, timing


def _encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """BOS (if the tokenizer adds one) + tokens + EOS, cut to `max_length` (EOS dropped when cut)."""
    rows = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None:
        return [list(r) for r in rows]
    return [list(r) + [eos] if len(r) < max_length else list(r) for r in rows]


def _batch(rows: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):  # right padding
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise UserInputError("the tokenizer has neither a pad nor an EOS token. Fix: set tokenizer.pad_token")
    return pad


@torch.inference_mode()
def perplexity(model, tokenizer, texts: list[str], *, max_length: int = 64, batch_size: int = 64) -> float:
    """exp(total next-token negative log-likelihood / number of predicted tokens) over `texts`."""
    rows = [r for r in _encode(tokenizer, list(texts), max_length) if len(r) > 1]
    if not rows:
        raise UserInputError("perplexity: no text with at least two tokens. Fix: pass non-empty texts")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = _pad_id(tokenizer)
    total, count = 0.0, 0
    order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths: less padding
    for first in range(0, len(rows), batch_size):
        batch = _batch([rows[i] for i in order[first:first + batch_size]], pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        target = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((target != -100).sum())
    model.train(was_training)
    return math.exp(total / count)


def settings_key(settings: dict[str, Any], texts: list[str]) -> str:
    """What a pretrained folder was made from: the settings and the exact texts (order included)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:16]


def reusable(out_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The stats of a finished pretraining in `out_dir` made with `key`, else None."""
    path = Path(out_dir) / STATS
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stats if stats.get("key") == key else None


def split_texts(texts: list[str], *, max_texts: int | None, held_out: int, seed: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): distinct non-empty texts, `held_out` of them drawn first and
    kept apart, then at most `max_texts` of the rest for training, in a seeded random order."""
    distinct = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    order = np.random.default_rng(seed).permutation(len(distinct))
    held_out = min(held_out, len(distinct) // 2)
    held = [distinct[i] for i in order[:held_out]]
    rest = [distinct[i] for i in order[held_out:]]
    if max_texts is not None:
        rest = rest[:max_texts]
    return rest, held


def pretrain_causal_lm(base_dir: str | Path, texts: list[str], out_dir: str | Path, *, held_out_texts: list[str],
                       epochs: int = 1, batch_size: int = 64, lr: float = 2e-3, max_length: int = 64,
                       warmup_ratio: float = 0.05, weight_decay: float = 0.01, max_grad_norm: float = 1.0,
                       seed: int = 0, key: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train every weight of the causal LM in `base_dir` on next-token prediction over `texts`.

    One text per sequence (BOS + text + EOS, at most `max_length` tokens, padding masked), AdamW
    with linear warm-up and decay, a seeded shuffle per epoch, under a forked RNG (the global RNG
    is left alone). Writes `out_dir` whole or not at all (model, tokenizer, `pretrain_stats.json`
    with `key`), loadable with `load_lm`. Returns the stats: held-out perplexity before and after,
    per-epoch mean loss, steps, seconds.
    """
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise UserInputError(f"{out_dir}: no texts to pretrain on. Fix: pass a non-empty corpus")
    if epochs < 1 or batch_size < 1 or max_length < 2:
        raise UserInputError(f"{out_dir}: text.pretrain epochs={epochs}, batch_size={batch_size}, "
                             f"max_length={max_length}. Fix: use epochs >= 1, batch_size >= 1, max_length >= 2")
    model, tokenizer = load_lm(base_dir)
    device = next(model.parameters()).device
    pad_id = _pad_id(tokenizer)
    rows = [r for r in _encode(tokenizer, texts, max_length) if len(r) > 1]
    held = [t for t in held_out_texts if isinstance(t, str) and t.strip()]
    before = perplexity(model, tokenizer, held, max_length=max_length) if held else None

    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        step_losses, total_steps, seconds = train_epochs(
            model, list(model.parameters()), rows, lambda chunk: _batch(chunk, pad_id, device), epochs=epochs,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
            max_grad_norm=max_grad_norm, seed=seed, desc="LM pretraining", progress=progress)
        epoch_losses = [sum(losses) / len(losses) for losses in step_losses]
    model.eval()
    after = perplexity(model, tokenizer, held, max_length=max_length) if held else None
    stats = {
        "key": key, "base": str(base_dir), "texts": len(rows), "held_out": len(held),
        "perplexity_before": before, "perplexity_after": after, "epoch_losses": epoch_losses,
        "steps": total_steps, "seconds": round(seconds, 3),
        "settings": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length,
                     "warmup_ratio": warmup_ratio, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm,
                     "seed": seed},
    }
    out = Path(out_dir)
    with atomic_folder(out) as tmp:  # weights, tokenizer and stats appear together or not at all
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = Path(base_dir) / TINY_MARKER
        if marker.is_file():  # the embedded tiny LM: keep its portable tokenizer class and its marker
            _portable_tokenizer_class(tmp)
            (tmp / TINY_MARKER).write_text(marker.read_text())
        write_json_atomic(tmp / STATS, stats)
    return stats
