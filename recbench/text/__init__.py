"""Text stage (LCU stage 1): a causal LM, optional LoRA SFT on domain tasks, frozen text embeddings.

The pipeline is dataset-agnostic:

1. `lm.load_lm(path)` loads any Hugging Face causal LM from a local folder (never downloads);
   `lm.build_tiny_lm(out_dir, corpus)` writes a small randomly initialised one so everything runs offline,
   and `pretrain.pretrain_causal_lm(base, texts, out_dir, held_out_texts=...)` trains it on the
   corpus (next-token prediction), recording held-out perplexity before and after.
2. `sft.finetune_lora(model, tokenizer, [(prompt, answer), ...], out_dir)` trains a LoRA adapter
   with the loss on the answer tokens only.
3. `export.export_embeddings(model, tokenizer, ids, texts, out_dir, name)` writes one pooled
   final-layer vector per text (chunked, resumable); `export.load_embeddings` reads them back.

Needs the `llm` extra (transformers, peft). Submodules are imported lazily so that `import recbench`
never pulls in transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_tiny_lm": "lm",
    "load_lm": "lm",
    "pretrain_causal_lm": "pretrain",
    "finetune_lora": "sft",
    "export_embeddings": "export",
    "load_embeddings": "export",
}

__all__ = ["build_tiny_lm", "export_embeddings", "finetune_lora", "load_embeddings", "load_lm", "pretrain_causal_lm"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
