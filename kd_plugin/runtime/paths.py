"""Where the project's files are: the one definition of the project root and the folders under it.

Everything that defaults to a folder of the checkout (caches, outputs, ``ds_configs/``) asks here, so a moved
checkout or an installed copy has one place to change. Folders that users relocate have their own environment
variables, read by the modules that own them (``KD_DB_DIR``, ``KD_RUNS_DIR``, ``KD_TEACHER_CACHE``,
``KD_EVAL_DATA_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds kd_plugin/, experiments/, ds_configs/
DS_CONFIGS = PROJECT_ROOT / "ds_configs"
CACHE = PROJECT_ROOT / ".cache"
OUTPUTS = PROJECT_ROOT / "outputs"
EXPERIMENTS = PROJECT_ROOT / "experiments"
SECANTUS_VENV = PROJECT_ROOT / ".venv-secantus"

TEACHER_CACHE_ENV = "KD_TEACHER_CACHE"  # overrides <project>/.cache/teachers (tests use a temporary directory)


def teacher_cache_root() -> Path:
    """Prepared and converted teachers: ``$KD_TEACHER_CACHE`` if set, else ``<project>/.cache/teachers``."""
    env = os.environ.get(TEACHER_CACHE_ENV)
    return Path(env).expanduser() if env else CACHE / "teachers"
