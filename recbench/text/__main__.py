"""`python -m recbench.text data=<name>`: LM (pretrained) -> LoRA SFT on the dataset's tasks -> text embeddings.

Writes under `text.out_dir`: base/ and pretrained/ (the embedded tiny LM, when `text.model` is null:
random weights, then causal-LM pretraining on the corpus; pretrained/ is reused while its settings and
texts match), adapter/ (the LoRA adapter and its training stats), embeddings/<corpus>/ (chunked
vectors + manifest) and text_stage.json (written last: counts, held-out perplexity, losses, timings).
A rerun resumes an interrupted export. The main job reads the embeddings with
`data.text_embeddings=<out_dir>/embeddings` (or runs this stage itself with `data.text_embeddings=auto`).
The work is in recbench/text/stage.py; this module is the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from recbench.config import PROJECT_ROOT
from recbench.errors import UserInputError


def run_text_stage(cfg: Any) -> Path:
    """The stage on `cfg.data` with the settings `cfg.text` and seed `cfg.seed`."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from recbench.text.stage import has_texts, run_stage

    with open_dict(cfg.data):
        cfg.data.text_embeddings = None  # the stage reads the texts, not earlier embeddings
    adapter = instantiate(cfg.data)
    if not has_texts(adapter):  # before the dataset is read
        return run_stage(adapter, None, cfg.text, cfg.seed)
    return run_stage(adapter, adapter.prepare(), cfg.text, cfg.seed)


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
              f"data.text_embeddings={embeddings} model=<a model that reads text embeddings>")

    run()


if __name__ == "__main__":
    main()
