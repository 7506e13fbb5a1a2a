"""The last resort when no database can be used at all: Sacred's FileStorageObserver, announced loudly.

Runs then go to ``<KD_RUNS_DIR>/file_storage/<id>/`` (run.json, config.json, metrics.json, cout.txt, info.json,
artifacts) and ``python -m kd_plugin.tracking.import_runs <dir>`` brings them into MongoDB later.
"""

from __future__ import annotations

import os
import sys

from sacred.observers import FileStorageObserver

from kd_plugin.tracking.credentials import mask_url
from kd_plugin.tracking.locations import check_runs_dir, file_storage_dir, import_command


class FallbackFileStorageObserver(FileStorageObserver):
    """FileStorageObserver that also accepts artifact names with a directory part (``student/config.json``):
    the stock observer copies to ``<run dir>/<name>`` without creating ``<run dir>/student/``, fails, and Sacred
    then stops calling it for the rest of the run."""

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        os.makedirs(os.path.dirname(os.path.join(self.dir, name)) or self.dir, exist_ok=True)
        super().artifact_event(name, filename, metadata=metadata, content_type=content_type)


def file_storage_fallback(reason: str, db_name: str | None = None) -> FallbackFileStorageObserver:
    """The fallback observer, after printing a warning nobody can miss (``reason``: why no database).

    Raises :class:`kd_plugin.errors.ConfigError` (``KD_RUNS_DIR``) if its directory cannot be written: then the
    run would be saved nowhere."""
    directory = file_storage_dir()
    check_runs_dir(directory, "this run's record as files, since no database can be used (the embedded SecantusDB "
                   "server cannot be started)")
    bar = "!" * 100
    print(
        f"\n{bar}\n"
        "!! kd_plugin tracking: NO DATABASE -- this run is NOT saved to MongoDB.\n"
        f"!! Why: {mask_url(reason)}\n"
        "!! The run is saved as files (Sacred FileStorageObserver) in\n"
        f"!!     {directory}\n"
        "!! Import those runs into MongoDB later (idempotent; needs a reachable database: KD_MONGO_URL, --url,\n"
        "!! or a working embedded SecantusDB) with:\n"
        f"!!     {import_command(directory, db_name=db_name)}\n"
        f"{bar}\n",
        file=sys.stderr,
        flush=True,
    )
    return FallbackFileStorageObserver(directory)
