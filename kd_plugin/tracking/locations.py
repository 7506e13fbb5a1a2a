"""Where runs go: the environment variables that choose the database, and the local directories.

* ``KD_MONGO_URL``  a MongoDB URL; the runs go there (``KD_MONGO_DB`` names the database, default ``kd_plugin``);
* ``KD_DB_DIR``     data directory of the embedded SecantusDB server used when nothing else is configured
  (see :mod:`kd_plugin.tracking.embedded_db`);
* ``KD_RUNS_DIR``   local directory for what could not reach a database (default ``<project>/runs``):
  ``pending/``       journals of runs whose database went away, and Sacred's ``sacred_mongo_fail_*.pickle``;
  ``file_storage/``  Sacred FileStorageObserver runs, written when no database could be started at all.

Everything under ``KD_RUNS_DIR`` is brought into MongoDB by :func:`import_command`.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

ENV_MONGO_URL = "KD_MONGO_URL"
ENV_MONGO_DB = "KD_MONGO_DB"
ENV_RUNS_DIR = "KD_RUNS_DIR"
DEFAULT_DB_NAME = "kd_plugin"


def project_root() -> Path:
    """The directory that contains the ``kd_plugin`` package directory."""
    return Path(__file__).resolve().parents[2]


def runs_dir() -> Path:
    """``$KD_RUNS_DIR`` if set (and non-empty), else ``<project>/runs`` (ignored by git)."""
    env = os.environ.get(ENV_RUNS_DIR)
    return Path(env).expanduser() if env else project_root() / "runs"


def pending_dir() -> Path:
    """Journals of runs not (yet) fully in their database, and Sacred's failure pickles."""
    return runs_dir() / "pending"


def file_storage_dir() -> Path:
    """Sacred FileStorageObserver runs written when no database could be reached at start."""
    return runs_dir() / "file_storage"


def env_mongo_url() -> str | None:
    return os.environ.get(ENV_MONGO_URL) or None


def env_db_name() -> str | None:
    return os.environ.get(ENV_MONGO_DB) or None


def import_command(path: str | os.PathLike, url: str | None = None, db_name: str | None = None) -> str:
    """The shell command that imports ``path`` into MongoDB (``url`` must already be masked if shown)."""
    parts = ["python", "-m", "kd_plugin.tracking.import_runs", str(path)]
    if url:
        parts += ["--url", url]
    if db_name:
        parts += ["--db", db_name]
    return " ".join(shlex.quote(part) for part in parts)
