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
