"""The text stage on one prepared dataset: LM -> LoRA SFT on its domain tasks -> one embedding per text.

Any adapter with texts takes part by defining `text_corpus(prepared)` (texts to embed, keyed by raw
id) and `text_tasks(prepared, per_task, seed)` ((prompt, answer) pairs from training rows only).
`run_stage` works on the adapter instance and prepared data it is given (the dataset is read once);
`embeddings_for` is what `data.text_embeddings=auto` calls from the adapter's `prepare()`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recbench.config import PROJECT_ROOT
from recbench.errors import UserInputError
from recbench.records import write_json_atomic

DONE = "text_stage.json"  # written last: its presence means the stage finished


def has_texts(adapter: Any) -> bool:
    return callable(getattr(adapter, "text_corpus", None)) and callable(getattr(adapter, "text_tasks", None))


def run_stage(adapter: Any, prepared: Any, text: Any, seed: int) -> Path:
    """Fine-tune (optionally) and export under `text.out_dir`; returns the embeddings folder."""
    from recbench.text.export import export_embeddings
    from recbench.text.lm import build_tiny_lm, load_lm
    from recbench.text.sft import finetune_lora

    if not has_texts(adapter):
        raise UserInputError(f"data '{adapter.name}' has no texts for the text stage (its adapter defines no "
                             "text_corpus / text_tasks). Fix: pick a dataset whose adapter provides texts")
    corpus = adapter.text_corpus(prepared)
    examples = adapter.text_tasks(prepared, per_task=text.examples_per_task, seed=seed)
    out_dir = Path(text.out_dir)
    model_path = text.model
    if model_path is None:
        sentences = [t for _, texts in corpus.values() for t in texts] + [p + a for p, a in examples]
        model_path = build_tiny_lm(out_dir / "base", sentences, seed=seed, **text.tiny)
    model, tokenizer = load_lm(model_path)
    stats: dict[str, Any] = {"model": str(model_path), "examples": len(examples), "finetuned": bool(text.finetune)}
    if text.finetune:
        lora = text.lora
        result = finetune_lora(model, tokenizer, examples, out_dir / "adapter", lora_r=lora.r,
                               lora_alpha=lora.alpha, lora_dropout=lora.dropout, epochs=lora.epochs,
                               batch_size=lora.batch_size, lr=lora.lr, max_length=lora.max_length, seed=seed)
        model = result.pop("model")
        stats.update(loss_first=result["loss_first"], loss_last=result["loss_last"], sft_seconds=result["seconds"])
    for name, (ids, texts) in corpus.items():
        export_embeddings(model, tokenizer, ids, texts, out_dir / "embeddings", name,
                          batch_size=text.export.batch_size, max_length=text.export.max_length,
                          pooling=text.export.pooling, chunk_size=text.export.chunk_size)
    write_json_atomic(out_dir / DONE, stats)
    return out_dir / "embeddings"


def embeddings_for(adapter: Any, prepared: Any, changes: Any, text_dir: str | Path) -> Path:
    """The embeddings of the text stage for this prepared dataset, run first when they are not there.

    Settings: conf/text_stage.yaml's `text` block (its seed included) changed by `changes` (a model
    config's `text:` block, e.g. `{finetune: false}`). Output: <text_dir>/<dataset name>/<dataset
    fingerprint>-<settings hash>/, so runs with different ranker seeds share one text stage, as in
    the paper (one fine-tuned LLM, then the ranker)."""
    from omegaconf import OmegaConf

    stage = OmegaConf.load(PROJECT_ROOT / "conf" / "text_stage.yaml")  # read directly: Hydra runs the main job
    text = OmegaConf.merge(stage.text, changes or {})
    settings = {k: v for k, v in OmegaConf.to_container(text).items() if k != "out_dir"}
    settings["export"].pop("chunk_size", None)  # how the export is saved, not what it holds
    digest = hashlib.sha256(json.dumps([settings, stage.seed], sort_keys=True).encode()).hexdigest()[:8]
    text.out_dir = str(Path(text_dir) / adapter.name / f"{prepared.meta['fingerprint'][:16]}-{digest}")
    out_dir = Path(text.out_dir)
    if not (out_dir / DONE).exists():
        print(f"recbench: no text embeddings for this dataset yet; running the text stage into {out_dir}")
        run_stage(adapter, prepared, text, seed=int(stage.seed))
    return out_dir / "embeddings"
