"""`python -m recbench.text data=<name>`: LM (pretrained) -> LoRA SFT on the dataset's tasks -> text embeddings.

Writes one folder per dataset fingerprint and settings, the same one `data.text_embeddings=auto`
uses (recbench/text/stage.py `stage_folders`): <data.text_dir>/<dataset>/<fingerprint>-<settings
hash>/ with adapter/ (the LoRA adapter and its training stats), embeddings/<corpus>/ (chunked vectors +
manifest) and text_stage.json (written last: counts, held-out perplexity, losses, timings), and, when
`text.model` is null, <fingerprint>-lm-<hash>/ with base/ and pretrained/ (the embedded tiny LM: random
weights, then causal-LM pretraining on the corpus; reused while its settings and texts match). A
finished stage is reused, whichever entry point built it; a rerun resumes an interrupted export.
`text.out_dir=<folder>` writes everything there instead (and always runs). The main job reads the
embeddings with `data.text_embeddings=<folder>/embeddings`, or finds the same folder itself with
`data.text_embeddings=auto` and the same `text.*` settings and seed. The work is in
recbench/text/stage.py; this module is the command line.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from recbench.config import PROJECT_ROOT
from recbench.errors import UserInputError


def stage_folders_of(cfg: Any, adapter: Any, prepared: Any) -> tuple[Path, Path | None]:
    """(stage folder, LM folder or None: inside the stage folder) for this composed config: `text.out_dir`
    when given, else the folder `data.text_embeddings=auto` keys by the dataset fingerprint, `cfg.text`
    and `cfg.seed` under `data.text_dir`."""
    from recbench.text.stage import stage_folders

    if cfg.text.get("out_dir"):
        return Path(cfg.text.out_dir), None
    text_dir = cfg.data.get("text_dir") or Path(cfg.paths.models) / "text"
    return stage_folders(adapter.name, prepared.meta["fingerprint"], cfg.text, cfg.seed, text_dir)


def run_text_stage(cfg: Any) -> Path:
    """The stage on `cfg.data` with the settings `cfg.text` and seed `cfg.seed`; returns the embeddings folder."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from recbench.text.stage import DONE, has_texts, run_stage

    with open_dict(cfg.data):
        cfg.data.text_embeddings = None  # the stage reads the texts, not earlier embeddings
    adapter = instantiate(cfg.data)
    if not has_texts(adapter):  # before the dataset is read
        return run_stage(adapter, None, cfg.text, cfg.seed)
    prepared = adapter.prepare()
    out_dir, lm_dir = stage_folders_of(cfg, adapter, prepared)
    text = cfg.text
    if lm_dir is not None:  # the keyed folder: a finished stage there is reused, whoever built it
        if (out_dir / DONE).exists():
            print(f"recbench: reusing the finished text stage in {out_dir}", file=sys.stderr, flush=True)
            return out_dir / "embeddings"
        text = copy.deepcopy(cfg.text)
        text.out_dir = str(out_dir)
    return run_stage(adapter, prepared, text, cfg.seed, lm_dir=lm_dir)


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from recbench import config  # noqa: F401  (registers resolvers)

    @hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="text_stage")
    def run(cfg) -> None:
        try:
            embeddings = run_text_stage(cfg)
        except UserInputError as error:
            print(f"recbench: error: {error}", file=sys.stderr)
            sys.exit(2)
        data = HydraConfig.get().runtime.choices.get("data")
        print(f"text embeddings: {embeddings}\nuse them with: python -m recbench data={data} "
              f"data.text_embeddings={embeddings} model=<a model that reads text embeddings> (or "
              "data.text_embeddings=auto with the same text.* settings and seed, which finds this folder)")

    run()


if __name__ == "__main__":
    main()
