"""OmegaConf resolvers used by conf/ (imported before Hydra composes the config)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# ${recbench.root:} -> the folder holding conf/, datasets/, experiments/ (the repository root)
OmegaConf.register_new_resolver("recbench.root", lambda: str(PROJECT_ROOT), replace=True)

# ${recbench.run_id:} -> one id per process (pid + random), the same at every call: run and sweep folders
# end with it, so two runs started in the same second never share a folder (their names have 1-s time)
RUN_ID = f"{os.getpid():x}{secrets.token_hex(3)}"
OmegaConf.register_new_resolver("recbench.run_id", lambda: RUN_ID, replace=True)


def _dataset_default(target: str, key: str, *args):
    from hydra.utils import get_class  # imported on use: reading conf/ stays light

    return get_class(target).config_default(key, *args)


# ${recbench.dataset_default:${data._target_},<key>,<args>...} -> a default the adapter class reads from the
# user's own files at compose time (e.g. the first label of a dataset description), via its `config_default`
OmegaConf.register_new_resolver("recbench.dataset_default", _dataset_default, replace=True)
