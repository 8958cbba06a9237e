"""Every dataset x every model found in conf/: a compatible pair composes from the real Hydra config,
builds on its dataset's smallest replica and runs one training step, one validation and one test
batch; an incompatible pair is refused in one line before any data is read.

The pairs come from conf/data/*.yaml x conf/model/*.yaml, so a new model (one file + one yaml) or a
new dataset is exercised the moment its yaml exists. Replicas and caches are shared per dataset.
"""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf, open_dict

from recbench import config  # noqa: F401  (registers resolvers)
from recbench.__main__ import CONF_DIR, build, check_fit
from recbench.data.schema import fits
from recbench.errors import UserInputError

DATA = sorted(path.stem for path in (CONF_DIR / "data").glob("*.yaml"))
MODELS = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))
SMOKE = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "loader.batch_size=128",
         "loader.eval_batch_size=512",
         # a text stage (data.text_embeddings=auto) on few, short examples
         "++text.examples_per_task=20", "++text.lora.max_length=128", "++text.export.max_length=16",
         "++text.pretrain.max_texts=1000"]


@functools.lru_cache(maxsize=None)
def compose_pair(data: str, model: str, root) -> tuple[object, dict[str, str]]:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"data={data}", f"model={model}", f"paths.datasets={root / 'datasets'}",
                                           f"paths.models={root / 'models'}", f"paths.experiments={root / 'runs'}",
                                           *SMOKE], return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
        OmegaConf.update(cfg, "data.replica", get_class(cfg.data._target_).smoke_replica, merge=True)
    return cfg, choices


def parts_fit(cfg) -> bool:
    produces = get_class(cfg.data._target_).produces
    targets = [cfg.model.net._target_, *(head._target_ for head in cfg.task.heads.values())]
    return all(fits(get_class(target).accepts, produces) for target in targets)


@pytest.fixture(scope="session")
def matrix_root(tmp_path_factory):
    return tmp_path_factory.mktemp("matrix")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_pair(data, model, matrix_root):
    cfg, choices = compose_pair(data, model, matrix_root)
    if not parts_fit(cfg):
        with pytest.raises(UserInputError) as refused:
            check_fit(cfg, choices)
        message = str(refused.value)
        assert "\n" not in message and "does not fit data" in message and "Fix:" in message, message
        return
    torch.manual_seed(0)
    datamodule, prepared, module = build(cfg, choices)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, limit_train_batches=1,
                          limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0,
                          enable_model_summary=False)
    before = {name: p.detach().clone() for name, p in module.net.named_parameters()}
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    moved = [name for name, p in module.net.named_parameters() if not torch.equal(before[name], p.detach())]
    assert moved, f"{model} on {data}: one training step changed no parameter"
    test = module.results["test"]
    assert test and all(isinstance(v, float) for v in test.values()), test
    assert any(math.isfinite(v) for v in test.values()), test
    assert prepared.meta["spec"]["schemas"]


def test_the_matrix_covers_every_yaml_and_runs_pairs_of_every_dataset(matrix_root):
    assert len(DATA) >= 4 and len(MODELS) >= 20
    runnable = {data: [m for m in MODELS if parts_fit(compose_pair(data, m, matrix_root)[0])] for data in DATA}
    assert all(runnable.values()), runnable  # every dataset has at least one model
    assert sum(map(len, runnable.values())) < len(DATA) * len(MODELS)  # and some pairs are refused
    L.seed_everything(0, verbose=False)
