"""`python -m recbench.text data=<name>`: LM -> LoRA SFT on the dataset's tasks -> text embeddings.

Writes under `text.out_dir`: base/ (the embedded tiny LM, when `text.model` is null), adapter/
(the LoRA adapter and its training stats) and embeddings/<corpus>/ (chunked vectors + manifest).
A rerun resumes an interrupted export. The main job reads the embeddings with
`data.text_embeddings=<out_dir>/embeddings`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from recbench.config import PROJECT_ROOT
from recbench.errors import UserInputError


def run_text_stage(cfg: Any) -> Path:
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from recbench.text.export import export_embeddings
    from recbench.text.lm import build_tiny_lm, load_lm
    from recbench.text.sft import finetune_lora

    text = cfg.text
    with open_dict(cfg.data):
        cfg.data.text_embeddings = None  # the stage reads the texts, not earlier embeddings
    adapter = instantiate(cfg.data)
    if not hasattr(adapter, "text_tasks"):
        raise UserInputError(f"data '{adapter.name}' has no texts for the text stage. Fix: use data=kuaicomt")
    prepared = adapter.prepare()
    corpus = adapter.text_corpus(prepared)
    examples = adapter.text_tasks(prepared, per_task=text.examples_per_task, seed=cfg.seed)
    out_dir = Path(text.out_dir)
    model_path = text.model
    if model_path is None:
        sentences = [t for _, texts in corpus.values() for t in texts] + [p + a for p, a in examples]
        model_path = build_tiny_lm(out_dir / "base", sentences, seed=cfg.seed, **text.tiny)
    model, tokenizer = load_lm(model_path)
    stats: dict[str, Any] = {"model": str(model_path), "examples": len(examples), "finetuned": bool(text.finetune)}
    if text.finetune:
        lora = text.lora
        result = finetune_lora(model, tokenizer, examples, out_dir / "adapter", lora_r=lora.r,
                               lora_alpha=lora.alpha, lora_dropout=lora.dropout, epochs=lora.epochs,
                               batch_size=lora.batch_size, lr=lora.lr, max_length=lora.max_length, seed=cfg.seed)
        model = result.pop("model")
        stats.update(loss_first=result["loss_first"], loss_last=result["loss_last"], sft_seconds=result["seconds"])
    for name, (ids, texts) in corpus.items():
        export_embeddings(model, tokenizer, ids, texts, out_dir / "embeddings", name,
                          batch_size=text.export.batch_size, max_length=text.export.max_length,
                          pooling=text.export.pooling)
    (out_dir / "text_stage.json").write_text(json.dumps(stats, indent=1))
    return out_dir / "embeddings"


def main() -> None:
    import hydra

    from recbench import config  # noqa: F401  (registers resolvers)

    @hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="text_stage")
    def run(cfg) -> None:
        try:
            embeddings = run_text_stage(cfg)
        except UserInputError as error:
            print(f"recbench: error: {error}", file=sys.stderr)
            sys.exit(2)
        print(f"text embeddings: {embeddings}\nuse them with: python -m recbench model=lcu "
              f"data={cfg.data._target_.split('.')[-2]} data.text_embeddings={embeddings}")

    run()


if __name__ == "__main__":
    main()
