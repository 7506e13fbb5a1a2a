"""Bring runs that did not reach MongoDB into it, in the structure Sacred's MongoObserver writes.

    python -m kd_plugin.tracking.import_runs PATH [PATH ...] [--url URL] [--db NAME]

Each PATH is searched (recursively) for:

* FileStorageObserver runs: directories with ``run.json`` (+ ``config.json``, ``metrics.json``, ``cout.txt``,
  ``info.json``, artifacts), e.g. ``runs/file_storage`` written when no database could be started;
* journals of :class:`ResilientMongoObserver`: directories with ``record.json`` (``runs/pending/<key>``), left
  when the database was away at the end of a run; removed once imported;
* Sacred's own ``sacred_mongo_fail_*.pickle`` files (a MongoObserver whose final save failed).

Importing is idempotent: every imported run records where it came from (``kd_tracking.run_key``), and a second
import of the same source updates that run (metrics and artifacts included) instead of adding a copy.
Database: the rule of :func:`kd_plugin.tracking.locations.resolve_database` with ``--url``/``--db`` as the explicit
argument: ``--url``, else ``KD_MONGO_URL``, else the embedded SecantusDB server (started if needed: importing
writes runs, like an experiment does); database name: ``--db``, else ``KD_MONGO_DB``, else ``kd_plugin``. A
journal records the database its run had resolved to; that name stands in for ``--db`` for that journal.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from pymongo.database import Database
from sacred.observers.mongo import MongoObserver, mimetype_detector

from kd_plugin.errors import ConfigError
from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.credentials import mask_url
from kd_plugin.tracking.dead_runs import mark_dead_runs
from kd_plugin.tracking.journal import Journal, is_journal_dir
from kd_plugin.tracking.locations import DEFAULT_DB_NAME, resolve_database, resolve_db_name
from kd_plugin.tracking.output_budget import filter_captured_output
from kd_plugin.tracking.run_record import RUNS, RunRecord, md5_of

FILE_STORAGE, JOURNAL, FAIL_PICKLE = "file_storage", "journal", "sacred_fail_pickle"
_FILE_STORAGE_INTERNAL = {"_sources", "_resources"}


@dataclass
class ImportResult:
    kind: str
    path: Path
    run_id: Any = None
    again: bool = False  # this source had been imported before: its run was updated
    error: str | None = None


# ------------------------------------------------------------------------------------------------ discovery


def discover(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """Every importable item under ``path`` (or ``path`` itself), as ``(kind, path)``, in a stable order."""
    root = Path(path)
    if root.is_file():
        return [(FAIL_PICKLE, root)] if _is_fail_pickle(root) else []
    found = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        if "run.json" in files:
            found.append((FILE_STORAGE, here))
            subdirs[:] = []  # artifacts live below; nothing else to find there
        elif is_journal_dir(here):
            found.append((JOURNAL, here))
            subdirs[:] = []
        else:
            subdirs[:] = sorted(d for d in subdirs if d not in _FILE_STORAGE_INTERNAL)
        found.extend((FAIL_PICKLE, here / name) for name in sorted(files) if _is_fail_pickle(here / name))
    return sorted(found, key=lambda item: (item[0], _natural_key(item[1])))


def _is_fail_pickle(path: Path) -> bool:
    return path.name.startswith("sacred_mongo_fail_") and path.suffix == ".pickle"


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in path.parts]


# ------------------------------------------------------------------------------ FileStorageObserver runs


def record_from_file_storage(run_dir: Path, db_name: str) -> RunRecord:
    """A FileStorageObserver run directory as the record MongoObserver would have written."""
    run_dir = run_dir.resolve()
    basedir = run_dir.parent  # the observer's base directory: sources are stored relative to it
    run = _read_json(run_dir / "run.json")
    experiment = dict(run["experiment"])
    stored_sources = experiment.get("sources") or []
    experiment["sources"] = []  # [name, GridFS id] after upload
    entry: dict[str, Any] = {
        "experiment": experiment,
        "format": MongoObserver.VERSION,
        "command": run.get("command"),
        "host": run.get("host", {}),
        "start_time": _datetime(run.get("start_time")),
        "config": _read_json(run_dir / "config.json", default={}),
        "meta": run.get("meta", {}),
        "status": run.get("status"),
        "resources": [_resource(basedir, resource) for resource in run.get("resources") or []],
        "artifacts": [],
        "captured_out": filter_captured_output(_read_text(run_dir / "cout.txt")),
        "info": _read_json(run_dir / "info.json", default={}),
        "heartbeat": _datetime(run.get("heartbeat")),
    }
    for key in ("result", "fail_trace"):
        if key in run:
            entry[key] = run[key]
    if run.get("stop_time"):
        entry["stop_time"] = _datetime(run["stop_time"])

    record = RunRecord(
        entry,
        run_key=f"{FILE_STORAGE}:{socket.gethostname()}:{run_dir}",
        db_name=db_name,
        imported_from=str(run_dir),
    )
    for name, stored in stored_sources:
        candidates = [basedir / stored, Path(experiment.get("base_dir", "")) / name]
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            record.notes.append(f"source {name!r} not stored: not found at {candidates[0]}")
            continue
        record.add_source(name, source, db_filename=os.path.join(experiment.get("base_dir", ""), name))
    for name in run.get("artifacts") or []:
        path = run_dir / name
        record.add_artifact(name, path, content_type=mimetype_detector.guess_type(str(path))[0])
    for name, series in _read_json(run_dir / "metrics.json", default={}).items():
        timestamps = [_datetime(ts) for ts in series.get("timestamps", [])]
        record.add_metrics({name: {"steps": series["steps"], "values": series["values"], "timestamps": timestamps}})
    if entry["status"] in ("COMPLETED", "FAILED", "INTERRUPTED", "TIMEOUT"):
        record.finish_metrics()
    return record


def _resource(basedir: Path, resource: list) -> list:
    """FileStorage keeps ``[filename, stored copy]``; MongoObserver keeps ``[filename, md5]``."""
    filename, stored = resource
    path = basedir / stored if not Path(stored).is_absolute() else Path(stored)
    return [filename, md5_of(path.read_bytes()) if path.is_file() else None]


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file() and default is not None:
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# ---------------------------------------------------------------------------------- Sacred failure pickles


def record_from_fail_pickle(path: Path, db: Database, db_name: str) -> RunRecord:
    """The run a MongoObserver could not save at the end. If ``db`` holds a run with the pickled ``_id`` that
    is the same run (same experiment and start time), it is completed in place; otherwise it gets a new id."""
    path = path.resolve()
    with open(path, "rb") as fh:
        entry = pickle.load(fh)
    record = RunRecord(entry, run_key=f"{FAIL_PICKLE}:{socket.gethostname()}:{path}", db_name=db_name,
                       imported_from=str(path))
    if record.reuse_stored_ids(db) or entry.get("_id") is None:
        return record
    stored = db[RUNS].find_one({"_id": entry["_id"]}, {"experiment.name": 1, "start_time": 1})
    if stored is not None and not _same_run(stored, entry):
        del entry["_id"]  # that id belongs to another run here: allocate a new one
    return record


def _same_run(stored: dict, entry: dict) -> bool:
    same_name = stored.get("experiment", {}).get("name") == entry.get("experiment", {}).get("name")
    a, b = stored.get("start_time"), entry.get("start_time")
    # BSON keeps milliseconds, the pickle microseconds
    return same_name and a is not None and b is not None and abs(a - b) < timedelta(milliseconds=1)


# -------------------------------------------------------------------------------------------------- import


def import_item(kind: str, path: Path, db_for, db_name: str | None) -> ImportResult:
    """Import one item; ``db_for(name)`` gives the database of that name."""
    result = ImportResult(kind, path)
    try:
        if kind == JOURNAL:
            journal = Journal(path)
            record = journal.read()
            db = db_for(db_name or record.db_name)
            result.again = record.run_id is not None or db[RUNS].count_documents(
                {"kd_tracking.run_key": record.run_key}, limit=1
            ) > 0
            record.write_to(db)
            journal.remove()  # a journal holds only what the database lacked; now it lacks nothing
        else:
            name = resolve_db_name(db_name)
            db = db_for(name)
            if kind == FILE_STORAGE:
                record = record_from_file_storage(path, name)
                result.again = record.reuse_stored_ids(db)
            else:
                record = record_from_fail_pickle(path, db, name)
                result.again = record.run_id is not None and db[RUNS].count_documents(
                    {"_id": record.run_id}, limit=1
                ) > 0
            record.write_to(db)
        result.run_id = record.run_id
    except Exception as exc:  # noqa: BLE001 -- report and go on with the other items
        result.error = f"{type(exc).__name__}: {mask_url(str(exc))}"
    return result


def import_paths(paths: list[str | os.PathLike], client: pymongo.MongoClient, db_name: str | None = None) -> list[ImportResult]:
    """Import every item under ``paths``. A record left RUNNING by a killed process (its files say RUNNING
    forever) is then recorded FAILED, as died, by the rule of :mod:`kd_plugin.tracking.dead_runs`, not shown alive."""
    items = [item for path in paths for item in discover(path)]
    touched: dict[str, Database] = {}

    def db_for(name: str) -> Database:
        return touched.setdefault(name, client[name])

    results = [import_item(kind, path, db_for, db_name) for kind, path in items]
    for db in touched.values():
        mark_dead_runs(db)
    return results


def _resolve_url(url: str | None) -> tuple[str, str]:
    """(URL, where it came from) by :func:`resolve_database`; the embedded server is started if it is the one."""
    destination = resolve_database(url, embedded="start", explicit="--url")
    if destination.server is not None:
        return destination.url, f"{destination.source}, data in {destination.server.data_dir}"
    return destination.url, destination.source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kd_plugin.tracking.import_runs",
        description="Import Sacred FileStorageObserver runs, kd_plugin journals and sacred_mongo_fail_*.pickle "
        "files into MongoDB (idempotent).",
    )
    parser.add_argument("paths", nargs="+", help="directories or files to import (searched recursively)")
    parser.add_argument("--url", default=None, help="MongoDB URL (default: $KD_MONGO_URL, else the embedded server)")
    parser.add_argument("--db", default=None, help="database name (default: a journal's own, else "
                        f"$KD_MONGO_DB, else {DEFAULT_DB_NAME})")
    args = parser.parse_args(argv)

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        url, source = _resolve_url(args.url)
    except embedded_db.EmbeddedServerUnavailable as exc:
        print(f"error: no database to import into (no --url, no KD_MONGO_URL): {exc}", file=sys.stderr)
        return 2
    except ConfigError as err:  # a URL pymongo cannot parse (--url or KD_MONGO_URL), password masked
        print(f"configuration error: {err}", file=sys.stderr)
        return 2
    print(f"importing into {mask_url(url)} ({source})")
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=10_000)
    try:
        results = import_paths(args.paths, client, args.db)
    finally:
        client.close()
    for r in results:
        if r.error:
            print(f"  FAILED   {r.kind:18s} {r.path}: {r.error}")
        else:
            print(f"  {'updated' if r.again else 'imported':8s} {r.kind:18s} {r.path} -> run {r.run_id}")
    failed = sum(r.error is not None for r in results)
    print(f"{len(results) - failed} imported, {failed} failed" + ("" if results else " (nothing found to import)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
