"""A run's local journal: the complete :class:`RunRecord` of a run whose database could not be written.

Layout (one directory per run, under :func:`kd_plugin.tracking.locations.pending_dir`)::

    <pending>/<run_key>/record.json      the record (MongoDB extended JSON: dates, ids, bytes round-trip)
    <pending>/<run_key>/files/<file_id>  copies of artifacts not yet uploaded (the originals may change)

The journal is rewritten whole each time a write to the database fails (the record is bounded: captured
output ~1 MB, metric series capped), and removed once the database holds everything. If the run ends while
the database is still away, the journal stays, and ``python -m kd_plugin.tracking.import_runs <dir>`` writes
it to the database later (then removes it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bson import json_util

from kd_plugin.tracking.run_record import RunRecord

RECORD_FILE = "record.json"
FILES_DIR = "files"
_JSON = json_util.CANONICAL_JSON_OPTIONS  # exact round trip of datetimes, ObjectIds, bytes, NaN


class Journal:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    @property
    def record_path(self) -> Path:
        return self.dir / RECORD_FILE

    def exists(self) -> bool:
        return self.record_path.is_file()

    def write(self, record: RunRecord) -> None:
        """Save ``record``, after copying its not-yet-uploaded artifacts into the journal."""
        files = self.dir / FILES_DIR
        for pending in record.pending_files:
            if pending.kind == "artifact" and pending.data is None and pending.path is not None:
                copy = files / str(pending.file_id)
                if Path(pending.path) != copy and Path(pending.path).is_file():
                    files.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(pending.path, copy)
                    pending.path = str(copy)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_name(f"{RECORD_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json_util.dumps(record.to_state(), json_options=_JSON, indent=1))
        os.replace(tmp, self.record_path)  # never a half-written journal

    def read(self) -> RunRecord:
        return RunRecord.from_state(json_util.loads(self.record_path.read_text(), json_options=_JSON))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def is_journal_dir(path: Path) -> bool:
    return (path / RECORD_FILE).is_file()
