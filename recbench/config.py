"""OmegaConf resolvers used by conf/ (imported before Hydra composes the config)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# ${recbench.root:} -> the folder holding conf/, datasets/, experiments/ (the repository root)
OmegaConf.register_new_resolver("recbench.root", lambda: str(PROJECT_ROOT), replace=True)
