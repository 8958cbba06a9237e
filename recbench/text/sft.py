"""Supervised fine-tuning (LCU stage 1) with a LoRA adapter.

Each example is a `(prompt, answer)` pair of plain text. The sequence fed to the model is
``prompt tokens (with the tokenizer's usual special tokens, e.g. BOS) + answer tokens + EOS``; the
labels copy the answer and EOS tokens and mask the prompt tokens with -100, so the loss (the
model's own shifted cross-entropy, averaged over answer tokens) teaches the answer only.
Too-long sequences keep the whole answer and the *end* of the prompt (where the question usually is).

Only the LoRA matrices train; the base weights stay exactly as loaded. The loop is plain PyTorch
(AdamW, linear warm-up / decay from transformers, gradient clipping) with a tqdm bar; the global
RNG state is saved and restored, and `seed` fixes LoRA initialisation, dropout and the example
order, so a run is repeatable on the same hardware.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from recbench.errors import UserInputError
from recbench.records import atomic_folder, write_json_atomic
from recbench.text.lm import model_source
from recbench.text.loop import train_epochs

# Attention projection names across common architectures (Llama/Qwen/Mistral, GPT-NeoX/Falcon,
# GPT-2, Phi/MPT, BERT-style). Only those present in the model are used.
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value",
                         "c_attn", "Wqkv", "query", "key", "value")


def attention_projections(model: torch.nn.Module) -> list[str] | None:
    """Leaf names of the model's attention projection layers, or None to let peft decide."""
    from transformers.pytorch_utils import Conv1D

    leaves = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, (torch.nn.Linear, Conv1D))}
    found = [name for name in ATTENTION_PROJECTIONS if name in leaves]
    return found or None


def encode_example(tokenizer, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (prompt masked with -100) for one example."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    answer_ids = answer_ids[:max_length]
    room = max_length - len(answer_ids)
    prompt_ids = prompt_ids[len(prompt_ids) - room:] if room > 0 else []
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def _collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):  # right padding
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(labs)] = torch.tensor(labs)
        attention[i, :len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device),
            "labels": labels.to(device)}


def finetune_lora(model, tokenizer, examples: list[tuple[str, str]], out_dir: str | Path, *,
                  lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05,
                  target_modules: list[str] | str | None = None, epochs: int = 1, batch_size: int = 16,
                  lr: float = 5e-4, max_length: int = 256, seed: int = 0, progress: bool = True,
                  warmup_ratio: float = 0.05, weight_decay: float = 0.0, max_grad_norm: float = 1.0,
                  gradient_checkpointing: bool = False) -> dict[str, Any]:
    """LoRA-fine-tune a causal LM on `(prompt, answer)` pairs; save the adapter to `out_dir`.

    `target_modules=None` puts LoRA on every attention projection found (q/k/v/o for Llama-style
    models); otherwise it is passed to peft as is. `model` is wrapped in place by peft (its
    attention layers now carry the adapter), and the wrapped `PeftModel` is returned under
    ``"model"``, in eval mode. Written to `out_dir`: the adapter (`save_pretrained`) and
    `sft_stats.json`. Returns the stats: per-epoch mean loss (`epoch_losses`, `loss_first`,
    `loss_last`), first/last step loss, `steps`, `seconds`, trainable / total parameter counts.
    """
    from peft import LoraConfig, get_peft_model

    if not examples:
        raise UserInputError(f"{out_dir}: no SFT examples. Fix: pass at least one (prompt, answer) pair")
    if epochs < 1 or batch_size < 1 or max_length < 2:
        raise UserInputError(f"{out_dir}: epochs={epochs}, batch_size={batch_size}, max_length={max_length}. "
                             "Fix: use epochs >= 1, batch_size >= 1, max_length >= 2")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise UserInputError(f"{out_dir}: the tokenizer has neither a pad nor an EOS token. "
                             "Fix: set tokenizer.pad_token before fine-tuning")
    out = Path(out_dir)
    source = model_source(model)
    device = next(model.parameters()).device
    encoded = [encode_example(tokenizer, prompt, answer, max_length) for prompt, answer in examples]
    targets = target_modules if target_modules is not None else attention_projections(model)

    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            target_modules=targets, bias="none", task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft 0.21 reads an attribute transformers 5 deprecates
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            peft_model = get_peft_model(model, config)
        if gradient_checkpointing:
            peft_model.gradient_checkpointing_enable()
            peft_model.enable_input_require_grads()
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        per_epoch, total_steps, seconds = train_epochs(
            peft_model, trainable, encoded, lambda chunk: _collate(chunk, pad_id, device), epochs=epochs,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
            max_grad_norm=max_grad_norm, seed=seed, desc="LoRA SFT", progress=progress)
        step_losses = [loss for losses in per_epoch for loss in losses]
        epoch_losses = [sum(losses) / len(losses) for losses in per_epoch]
        peft_model.eval()

    trained_source = {"model": source.get("model"), "adapter": str(out), "merged": False}
    peft_model._recbench_source = trained_source
    model._recbench_source = dict(trained_source)  # `model` now carries the adapter too
    stats = {
        "examples": len(encoded), "epochs": epochs, "steps": total_steps, "seconds": round(seconds, 3),
        "epoch_losses": epoch_losses, "loss_first": epoch_losses[0], "loss_last": epoch_losses[-1],
        "step_loss_first": step_losses[0], "step_loss_last": step_losses[-1],
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in peft_model.parameters()),
        "target_modules": sorted(peft_model.peft_config["default"].target_modules),
        "settings": {"lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
                     "epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length,
                     "seed": seed, "warmup_ratio": warmup_ratio, "weight_decay": weight_decay,
                     "max_grad_norm": max_grad_norm},
        "base_model": source.get("model"), "adapter": str(out),
    }
    with atomic_folder(out) as tmp:  # adapter and stats appear together or not at all
        peft_model.save_pretrained(tmp)
        write_json_atomic(tmp / "sft_stats.json", stats)
    return {**stats, "model": peft_model}
