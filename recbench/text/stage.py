"""The text stage on one prepared dataset: LM (pretrained on the corpus) -> LoRA SFT on its domain tasks
-> one embedding per text.

Any adapter with texts takes part by defining `text_corpus(prepared)` (texts to embed, keyed by raw
id) and `text_tasks(prepared, per_task, seed, general_share)` ((prompt, answer) pairs from training
rows only, `general_share` of them general data). `run_stage` works on the adapter instance and
prepared data it is given (the dataset is read once); `embeddings_for` is what
`data.text_embeddings=auto` calls from the adapter's `prepare()`.

The LM: `text.model` (a local Hugging Face model, used as is) or, when null, the embedded tiny LM:
`build_tiny_lm` (tokenizer + random weights) then `pretrain_causal_lm` on the corpus texts, so that
the fine-tuned arm (LoRA SFT) and the untuned arm (`text.finetune=false`) both start from a model
that has learnt the domain's language. The pretrained LM is kept in `<lm_dir>/pretrained/` with the
key of what it was made from and reused while the key matches (both arms share it under
`embeddings_for`).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from recbench.config import PROJECT_ROOT
from recbench.errors import UserInputError
from recbench.records import write_json_atomic

DONE = "text_stage.json"  # written last: its presence means the stage finished
LM_SETTINGS = ("model", "tiny", "pretrain", "examples_per_task", "general_share", "threads")  # what the LM depends on


def has_texts(adapter: Any) -> bool:
    return callable(getattr(adapter, "text_corpus", None)) and callable(getattr(adapter, "text_tasks", None))


def _pretrain_enabled(text: Any) -> bool:
    enabled = text.pretrain.enabled
    if enabled == "auto":
        return text.model is None
    if isinstance(enabled, bool):
        return enabled
    raise UserInputError(f"text.pretrain.enabled={enabled!r}. Fix: use auto, true or false")


@contextmanager
def torch_threads(setting: Any, tiny: bool) -> Iterator[None]:
    """Run with `setting` intra-op threads (auto: 1 for the tiny LM, torch's default otherwise)."""
    import torch

    count = (1 if tiny else None) if setting == "auto" else setting
    if count is None:
        yield
        return
    if not isinstance(count, int) or count < 1:
        raise UserInputError(f"text.threads={setting!r}. Fix: use auto, null or a positive integer")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_lm(text: Any, corpus: dict[str, tuple[Any, list[str]]], examples: list[tuple[str, str]],
               lm_dir: Path, seed: int) -> tuple[Path | str, dict[str, Any]]:
    """The model path the stage fine-tunes / exports with, and its pretraining stats ({} if none).

    `text.model` null: the tiny LM is built in `lm_dir/base` (tokenizer from the corpus and the SFT
    texts); with pretraining (default), it is then trained on the corpus into `lm_dir/pretrained`,
    which is reused while its key (settings, seed, texts) matches."""
    from omegaconf import OmegaConf

    from recbench.text.lm import build_tiny_lm
    from recbench.text.pretrain import pretrain_causal_lm, reusable, settings_key, split_texts

    texts = [t for _, part in corpus.values() for t in part]
    sentences = texts + [prompt + answer for prompt, answer in examples]  # the tiny tokenizer's corpus
    tiny = text.model is None
    if not _pretrain_enabled(text):
        if not tiny:
            return text.model, {}
        return build_tiny_lm(lm_dir / "base", sentences, seed=seed, **text.tiny), {}
    settings = OmegaConf.to_container(text.pretrain, resolve=True)
    key = settings_key({"model": text.model, "tiny": OmegaConf.to_container(text.tiny) if tiny else None,
                        "pretrain": settings, "seed": seed}, sentences if tiny else texts)
    pretrained = lm_dir / "pretrained"
    stats = reusable(pretrained, key)
    if stats is not None:
        print(f"recbench: reusing the pretrained LM in {pretrained}")
        return pretrained, stats
    base = build_tiny_lm(lm_dir / "base", sentences, seed=seed, **text.tiny) if tiny else text.model
    train, held = split_texts(texts, max_texts=settings["max_texts"], held_out=settings["held_out"], seed=seed)
    stats = pretrain_causal_lm(base, train, pretrained, held_out_texts=held, epochs=settings["epochs"],
                               batch_size=settings["batch_size"], lr=settings["lr"],
                               max_length=settings["max_length"], seed=seed, key=key)
    return pretrained, stats


def run_stage(adapter: Any, prepared: Any, text: Any, seed: int, lm_dir: str | Path | None = None) -> Path:
    """Pretrain (tiny LM), fine-tune (optionally) and export under `text.out_dir`; returns the embeddings
    folder. `lm_dir` (default `text.out_dir`) holds base/ and pretrained/; arms may share it."""
    from recbench.text.export import export_embeddings
    from recbench.text.lm import load_lm
    from recbench.text.sft import finetune_lora

    if not has_texts(adapter):
        raise UserInputError(f"data '{adapter.name}' has no texts for the text stage (its adapter defines no "
                             "text_corpus / text_tasks). Fix: pick a dataset whose adapter provides texts")
    corpus = adapter.text_corpus(prepared)
    examples = adapter.text_tasks(prepared, per_task=text.examples_per_task, seed=seed,
                                  general_share=text.general_share)
    out_dir = Path(text.out_dir)
    with torch_threads(text.threads, tiny=text.model is None):
        model_path, pretrain = prepare_lm(text, corpus, examples, Path(lm_dir) if lm_dir else out_dir, seed)
        model, tokenizer = load_lm(model_path)
        stats: dict[str, Any] = {"model": str(model_path), "examples": len(examples),
                                 "general_share": text.general_share, "finetuned": bool(text.finetune),
                                 "pretrained": bool(pretrain)}
        if pretrain:
            stats.update(pretrain_texts=pretrain["texts"], pretrain_seconds=pretrain["seconds"],
                         perplexity_held_out_before=pretrain["perplexity_before"],
                         perplexity_held_out_after=pretrain["perplexity_after"])
        if text.finetune:
            lora = text.lora
            result = finetune_lora(model, tokenizer, examples, out_dir / "adapter", lora_r=lora.r,
                                   lora_alpha=lora.alpha, lora_dropout=lora.dropout, epochs=lora.epochs,
                                   batch_size=lora.batch_size, lr=lora.lr, max_length=lora.max_length, seed=seed)
            model = result.pop("model")
            stats.update(loss_first=result["loss_first"], loss_last=result["loss_last"],
                         sft_seconds=result["seconds"])
        for name, (ids, texts) in corpus.items():
            export_embeddings(model, tokenizer, ids, texts, out_dir / "embeddings", name,
                              batch_size=text.export.batch_size, max_length=text.export.max_length,
                              pooling=text.export.pooling, chunk_size=text.export.chunk_size)
    write_json_atomic(out_dir / DONE, stats)
    return out_dir / "embeddings"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def auto_settings(changes: Any) -> tuple[Any, int]:
    """The text settings and seed of `data.text_embeddings=auto`: conf/text_stage.yaml's `text` block
    changed by `changes` (a model config's `text:` block, e.g. `{finetune: false}`), and its `seed`."""
    from omegaconf import OmegaConf

    stage = OmegaConf.load(PROJECT_ROOT / "conf" / "text_stage.yaml")  # read directly: Hydra runs the main job
    return OmegaConf.merge(stage.text, changes or {}), int(stage.seed)


def stage_folders(dataset: str, fingerprint: str, text: Any, seed: int, text_dir: str | Path) -> tuple[Path, Path]:
    """(stage folder, LM folder) of the text stage for one prepared dataset and settings: the one key both
    entry points use (`data.text_embeddings=auto` and `python -m recbench.text`), so whichever runs first
    builds the folder the other reuses.

    Stage folder: <text_dir>/<dataset>/<fingerprint[:16]>-<hash of the settings and seed>/; where it is
    written (`out_dir`) and how the export is chunked (`export.chunk_size`) are not part of the key. LM
    folder: <fingerprint[:16]>-lm-<hash of the LM settings and seed>/, shared by the arms that differ only
    in fine-tuning, LoRA or export settings."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(text, resolve=False)
    values.pop("out_dir", None)  # may hold interpolations only Hydra resolves; never part of the key
    settings = OmegaConf.to_container(OmegaConf.create(values), resolve=True)
    settings["export"].pop("chunk_size", None)  # how the export is saved, not what it holds
    folder = Path(text_dir) / dataset
    prefix = fingerprint[:16]
    lm_settings = {k: settings.get(k) for k in LM_SETTINGS}
    return (folder / f"{prefix}-{_digest([settings, int(seed)])}",
            folder / f"{prefix}-lm-{_digest([lm_settings, int(seed)])}")


def embeddings_for(adapter: Any, prepared: Any, changes: Any, text_dir: str | Path) -> Path:
    """The embeddings of the text stage for this prepared dataset, run first when they are not there.

    Settings: `auto_settings(changes)`. Folders: `stage_folders` (one text stage per dataset
    fingerprint and settings, shared by runs with different ranker seeds, as in the paper: one
    fine-tuned LLM, then the ranker; `python -m recbench.text` with the same settings uses it too)."""
    text, seed = auto_settings(changes)
    out_dir, lm_dir = stage_folders(adapter.name, prepared.meta["fingerprint"], text, seed, text_dir)
    text.out_dir = str(out_dir)
    if not (out_dir / DONE).exists():
        print(f"recbench: no text embeddings for this dataset yet; running the text stage into {out_dir}")
        run_stage(adapter, prepared, text, seed=seed, lm_dir=lm_dir)
    return out_dir / "embeddings"
