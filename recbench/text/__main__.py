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
from recbench.records import write_json_atomic


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
                          pooling=text.export.pooling, chunk_size=text.export.chunk_size)
    write_json_atomic(out_dir / "text_stage.json", stats)
    return out_dir / "embeddings"


def auto_text_embeddings(main_cfg: Any) -> Path:
    """`data.text_embeddings=auto` in the main job: the embeddings of the text stage (the settings of
    conf/text_stage.yaml, its seed included, changed by an optional `text:` block of the main
    config, e.g. a model config's `text: {finetune: false}`) on the main job's data config, under
    models/text/<data>/<dataset fingerprint>-<settings hash>/. The stage runs first when they are
    not there yet. Runs with different ranker seeds share one text stage, as in the paper (one
    fine-tuned LLM, then the ranker)."""
    import hashlib

    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    data_cfg = main_cfg.data.copy()
    with open_dict(data_cfg):
        data_cfg.text_embeddings = None
    adapter = instantiate(data_cfg)
    fingerprint = adapter.prepare().meta["fingerprint"]
    # the stage's own yaml gives the defaults (read directly: Hydra is already running this job)
    stage = OmegaConf.load(PROJECT_ROOT / "conf" / "text_stage.yaml")
    text = OmegaConf.merge(stage.text, main_cfg.get("text") or {})
    settings = {k: v for k, v in OmegaConf.to_container(text).items() if k != "out_dir"}
    settings["export"].pop("chunk_size", None)  # how the export is saved, not what it holds
    digest = hashlib.sha256(json.dumps([settings, stage.seed], sort_keys=True).encode()).hexdigest()[:8]
    text.out_dir = str(Path(main_cfg.paths.models) / "text" / adapter.name / f"{fingerprint[:16]}-{digest}")
    cfg = OmegaConf.create({"seed": stage.seed, "data": data_cfg, "paths": main_cfg.paths, "text": text})
    out_dir = Path(cfg.text.out_dir)
    if not (out_dir / "text_stage.json").exists():  # written last: its presence means the stage finished
        print(f"recbench: no text embeddings for this dataset yet; running the text stage into {out_dir}")
        run_text_stage(cfg)
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
