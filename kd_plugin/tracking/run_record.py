"""The MongoDB record of one run, kept in memory so that it can be (re)written at any time, idempotently.

A Sacred run in MongoDB is (exactly what Sacred's MongoObserver writes, so analysis code sees no difference):

* ``runs``:    one document ``{_id, experiment, format, command, host, start_time, config, meta, status,
               resources, artifacts, captured_out, info, heartbeat, result, stop_time, fail_trace}``;
* ``metrics``: one document per metric series ``{run_id, name, steps, values, timestamps}``, referenced from
               ``info.metrics`` as ``[{name, id}]``;
* ``fs.*``:    GridFS files: the experiment's sources (``experiment.sources`` = ``[[name, file_id]]``) and the
               artifacts (``artifacts`` = ``[{name, file_id}]``, file name ``artifact://runs/<id>/<name>``).

:meth:`RunRecord.write_to` makes the database match this object, and is safe to repeat after any failure:
GridFS and metric document ids are chosen here before the first attempt (a retried upload or upsert cannot
create a duplicate), metric arrays are appended only when the database is known to hold the rest (else
rewritten whole), the run document is ``$set`` whole, and a run whose id is not yet known is first looked up
by ``kd_tracking.run_key`` (a random key, or the source path for imported runs) before a new id is allocated.
The live observer, the journal and the import command all use this one class.

Resumed runs are linked both ways (:mod:`kd_plugin.tracking.resume_links`): a run whose info has
``resumed_from_run`` writes ``info.resumed_by_run`` into that earlier run's document, once, as part of the same
idempotent write (so an outage only delays it). A record written again later (an imported journal of the earlier
run) keeps a ``resumed_by_run`` the database already holds.

:func:`ensure_indexes` gives the collections the indexes that readers need (Omniboard and the analysis read
metrics by ``run_id`` and ``name``).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bson
import gridfs
from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure
from sacred.observers.mongo import force_bson_encodeable

from kd_plugin.tracking.credentials import redact
from kd_plugin.tracking.metric_series import DEFAULT_MAX_POINTS, MetricSeries
from kd_plugin.tracking.output_budget import bound_text
from kd_plugin.tracking.resume_links import RESUMED_BY_RUN, RESUMED_FROM_RUN, link_back

RUNS = "runs"
METRICS = "metrics"
# A run document stays far below MongoDB's 16 MB limit: captured output is already bounded to ~1 MB, this is
# the last line of defence against a huge ``info`` or ``result``.
MAX_RUN_DOCUMENT_BYTES = 8_000_000
_SHRUNK_CAPTURED_OUT_BYTES = 200_000
# Indexes every database of runs gets (ensure_indexes): metric series are looked up by run and name (Omniboard,
# the analysis); RUNNING runs by status (the dead-run check, kd_plugin.tracking.dead_runs).
INDEXES = {METRICS: [[("run_id", 1), ("name", 1)]], RUNS: [[("status", 1)]]}
_INDEX_EXISTS_CODES = {85, 86}  # IndexOptionsConflict / IndexKeySpecsConflict: the same keys, another name


def ensure_indexes(db: Database) -> None:
    """Create :data:`INDEXES` if missing (idempotent; an index on the same keys under another name counts)."""
    for collection, indexes in INDEXES.items():
        for keys in indexes:
            try:
                db[collection].create_index(keys)
            except OperationFailure as exc:
                if exc.code not in _INDEX_EXISTS_CODES:
                    raise


@dataclass
class PendingFile:
    """A file that must be in GridFS before the run document refers to it: a source or an artifact."""

    kind: str  # "source" | "artifact"
    name: str  # source: path relative to the experiment's base_dir; artifact: the artifact's name
    file_id: ObjectId  # chosen before the upload, so a retried upload replaces a half-written one
    path: str | None = None  # where to read the content (None: ``data`` holds it)
    data: bytes | None = None
    db_filename: str | None = None  # sources: absolute path, as MongoObserver names them
    md5: str | None = None
    metadata: Any = None
    content_type: str | None = None


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class RunRecord:
    def __init__(
        self,
        entry: dict[str, Any],
        run_key: str,
        db_name: str,
        max_metric_points: int = DEFAULT_MAX_POINTS,
        imported_from: str | None = None,
    ):
        self.entry = entry  # the ``runs`` document; no "_id" until one is allocated
        self.run_key = run_key
        self.db_name = db_name
        self.max_metric_points = max_metric_points
        self.imported_from = imported_from
        self.series: dict[str, MetricSeries] = {}
        self.pending_files: list[PendingFile] = []
        self.notes: list[str] = []  # problems met while writing (e.g. an artifact file that disappeared)
        self.linked_run: Any = None  # the earlier run whose document says resumed_by_run = this run
        self.kept_info: dict[str, Any] = {}  # info written into the stored document by other runs (resumed_by_run)
        self._stored_info_read = False

    @property
    def run_id(self) -> Any:
        return self.entry.get("_id")

    # ------------------------------------------------------------------------------------------ changes
    def add_metrics(self, metrics_by_name: dict[str, dict[str, list]]) -> None:
        """Sacred's linearized metrics: ``{name: {"steps": [...], "values": [...], "timestamps": [...]}}``."""
        for name, points in metrics_by_name.items():
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = MetricSeries(name, max_points=self.max_metric_points)
            series.extend(points["steps"], points["values"], points["timestamps"])

    def finish_metrics(self) -> None:
        for series in self.series.values():
            series.finish()

    def add_source(self, name: str, path: str | Path, md5: str | None = None, db_filename: str | None = None) -> None:
        """``db_filename``: the name in GridFS (MongoObserver uses the source's absolute path; default ``path``)."""
        data = Path(path).read_bytes()  # read now: sources are small and may change on disk during the run
        self.pending_files.append(
            PendingFile("source", name, ObjectId(), data=data, db_filename=db_filename or str(path),
                        md5=md5 or md5_of(data))
        )

    def add_artifact(self, name: str, path: str | Path, metadata: Any = None, content_type: str | None = None) -> None:
        self.pending_files.append(
            PendingFile("artifact", name, ObjectId(), path=str(path), metadata=metadata, content_type=content_type)
        )

    # ---------------------------------------------------------------------------------------- the document
    def document(self) -> dict[str, Any]:
        """The ``runs`` document as it must be stored (without ``_id``): metric references added, passwords
        masked, size bounded."""
        doc = {key: value for key, value in self.entry.items() if key != "_id"}
        info = dict(doc.get("info") or {})
        if self.series:
            info["metrics"] = [{"name": name, "id": str(s.doc_id)} for name, s in self.series.items()]
        for key, value in self.kept_info.items():
            info.setdefault(key, value)
        thinned = {name: s.summary() for name, s in self.series.items() if s.thinned}
        if thinned:
            info["metrics_thinned"] = thinned  # the cap of metric_series.DEFAULT_MAX_POINTS was reached
        doc["info"] = info
        doc["kd_tracking"] = {"run_key": self.run_key}
        if self.imported_from:
            doc["kd_tracking"]["imported_from"] = self.imported_from
        if self.notes:
            doc["kd_tracking"]["notes"] = list(self.notes)
        return _fit_document(redact(doc))

    # ------------------------------------------------------------------------------------- database sync
    def reuse_stored_ids(self, db: Database) -> bool:
        """For a record rebuilt from files (an import done again): take over the ids the database already
        uses for this run, its metric documents and its artifacts, so writing it again updates them instead of
        adding copies. True if the run was found (by ``kd_tracking.run_key``)."""
        stored = db[RUNS].find_one({"kd_tracking.run_key": self.run_key}, {"_id": 1, "artifacts": 1})
        if stored is None:
            return False
        self.entry["_id"] = stored["_id"]
        for doc in db[METRICS].find({"run_id": stored["_id"]}, {"_id": 1, "name": 1}):
            series = self.series.get(doc["name"])
            if series is not None:
                series.doc_id = doc["_id"]
                series.mark_uncertain()
        stored_artifacts = {a["name"]: a["file_id"] for a in stored.get("artifacts") or []}
        for pending in self.pending_files:
            if pending.kind == "artifact" and pending.name in stored_artifacts:
                pending.file_id = stored_artifacts[pending.name]  # already uploaded: _put_once skips it
        return True

    def write_to(self, db: Database) -> None:
        """Bring ``db`` up to date with this record. Raises (pymongo errors, OSError) if it could not; calling
        it again later continues where it stopped."""
        fs = gridfs.GridFS(db)
        self._upload(fs, "source")  # the run document refers to them from the start
        self._ensure_run_id(db[RUNS])
        self._keep_links_of_stored_document(db[RUNS])
        self._upload(fs, "artifact")  # their GridFS names contain the run id
        self._write_metrics(db[METRICS])
        self._link_resumed_run(db[RUNS])
        doc = self.document()
        update: dict[str, Any] = {"$set": doc}
        if doc.get("status") == "RUNNING" and "stop_time" not in doc:
            # alive after all: undo a died mark (kd_plugin.tracking.dead_runs; kd_tracking is set whole above)
            update["$unset"] = {"stop_time": "", "fail_trace": ""}
        db[RUNS].update_one({"_id": self.run_id}, update, upsert=True)

    def _keep_links_of_stored_document(self, runs) -> None:
        """Once per record object: take over a ``resumed_by_run`` another run wrote into the stored document, so
        writing this record again (an imported journal) does not erase it."""
        if self._stored_info_read:
            return
        stored = runs.find_one({"_id": self.run_id}, {f"info.{RESUMED_BY_RUN}": 1})
        by_run = ((stored or {}).get("info") or {}).get(RESUMED_BY_RUN)
        if by_run is not None:
            self.kept_info[RESUMED_BY_RUN] = by_run
        self._stored_info_read = True

    def _link_resumed_run(self, runs) -> None:
        """Write ``info.resumed_by_run`` into the run this one resumed (once). A network error propagates (the
        observer retries the whole write later); a refusal or a missing run is noted and not retried."""
        earlier = (self.entry.get("info") or {}).get(RESUMED_FROM_RUN)
        if earlier is None or earlier == self.run_id or earlier == self.linked_run:
            return
        note = link_back(runs, earlier, self.run_id, self.db_name)
        if note:
            self.notes.append(note)
        self.linked_run = earlier

    def _ensure_run_id(self, runs) -> None:
        if self.run_id is not None:
            return
        # An earlier attempt may have inserted the run and lost the reply: find it by its key.
        found = runs.find_one({"kd_tracking.run_key": self.run_key}, {"_id": 1})
        if found is not None:
            self.entry["_id"] = found["_id"]
            return
        doc = self.document()
        while True:  # Sacred's id allocation: the largest id + 1; a concurrent run taking it -> next one
            last = list(runs.find({}, {"_id": 1}).sort("_id", -1).limit(1))
            candidate = last[0]["_id"] + 1 if last else 1
            try:
                runs.insert_one({"_id": candidate, **doc})
            except DuplicateKeyError:
                continue
            self.entry["_id"] = candidate
            self._stored_info_read = True  # a new document: nobody linked it yet
            return

    def _upload(self, fs: gridfs.GridFS, kind: str) -> None:
        for pending in [p for p in self.pending_files if p.kind == kind]:
            if kind == "source":
                file_id = self._put_source(fs, pending)
                self.entry.setdefault("experiment", {}).setdefault("sources", []).append([pending.name, file_id])
            else:
                if not self._put_artifact(fs, pending):
                    self.pending_files.remove(pending)
                    continue
                self.entry.setdefault("artifacts", []).append({"name": pending.name, "file_id": pending.file_id})
            self.pending_files.remove(pending)

    def _put_source(self, fs: gridfs.GridFS, pending: PendingFile) -> ObjectId:
        # Same source file, same content: share one GridFS file between runs (what MongoObserver intends;
        # the md5 is stored explicitly because pymongo 4's GridFS no longer computes it).
        same = fs.find_one({"filename": pending.db_filename, "md5": pending.md5})
        if same is not None:
            return same._id
        _put_once(fs, pending, pending.data, filename=pending.db_filename, md5=pending.md5)
        return pending.file_id

    def _put_artifact(self, fs: gridfs.GridFS, pending: PendingFile) -> bool:
        """Upload an artifact; False if its file is gone (noted in the record instead of blocking every sync)."""
        filename = f"artifact://{RUNS}/{self.run_id}/{pending.name}"
        if pending.data is not None:
            _put_once(fs, pending, pending.data, filename=filename)
            return True
        if fs.exists(pending.file_id):  # stored meanwhile (e.g. by an import of this run's journal)
            return True
        try:
            with open(pending.path, "rb") as fh:
                _put_once(fs, pending, fh, filename=filename)
        except FileNotFoundError:
            note = f"artifact {pending.name!r} not stored: {pending.path} no longer exists"
            self.notes.append(note)
            print(f"kd_plugin tracking: {note}", file=sys.stderr)
            return False
        return True

    def _write_metrics(self, metrics) -> None:
        for series in self.series.values():
            write = series.pending_write()
            if write is None:
                continue
            ids = {"run_id": self.run_id, "name": series.name}
            arrays = {"steps": write.steps, "values": write.values, "timestamps": write.timestamps}
            if write.full:
                update = {"$set": {**ids, **arrays}}
            else:
                update = {"$set": ids, "$push": {key: {"$each": items} for key, items in arrays.items()}}
            try:
                metrics.update_one({"_id": series.doc_id}, update, upsert=True)
            except BaseException:
                series.mark_uncertain()
                raise
            series.mark_written()

    # -------------------------------------------------------------------------------------- journal state
    def to_state(self) -> dict[str, Any]:
        return {
            "format": "kd_plugin.RunRecord-1",
            "run_key": self.run_key,
            "db_name": self.db_name,
            "max_metric_points": self.max_metric_points,
            "imported_from": self.imported_from,
            "notes": self.notes,
            "linked_run": self.linked_run,
            "kept_info": self.kept_info,
            "entry": self.entry,
            "series": [series.to_state() for series in self.series.values()],
            "pending_files": [asdict(pending) for pending in self.pending_files],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunRecord:
        record = cls(
            state["entry"],
            run_key=state["run_key"],
            db_name=state["db_name"],
            max_metric_points=state["max_metric_points"],
            imported_from=state.get("imported_from"),
        )
        record.notes = list(state.get("notes") or [])
        record.linked_run = state.get("linked_run")
        record.kept_info = dict(state.get("kept_info") or {})
        for series_state in state["series"]:
            series = MetricSeries.from_state(series_state)
            record.series[series.name] = series
        record.pending_files = [PendingFile(**pending) for pending in state["pending_files"]]
        return record


def _put_once(fs: gridfs.GridFS, pending: PendingFile, content: Any, **fields: Any) -> None:
    if fs.exists(pending.file_id):
        return  # an earlier attempt completed
    fs.delete(pending.file_id)  # chunks of an upload that was cut off, if any
    fs.put(content, _id=pending.file_id, metadata=pending.metadata, content_type=pending.content_type, **fields)


def _encoded_size(doc: dict[str, Any]) -> int:
    return len(bson.encode(doc))


def _fit_document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` made BSON-encodable and smaller than MAX_RUN_DOCUMENT_BYTES."""
    try:
        size = _encoded_size(doc)
    except (bson.errors.InvalidDocument, OverflowError):
        doc = force_bson_encodeable(doc)  # Sacred's own repair: unencodable values become strings
        size = _encoded_size(doc)
    if size <= MAX_RUN_DOCUMENT_BYTES:
        return doc
    doc["captured_out"] = bound_text(doc.get("captured_out") or "", _SHRUNK_CAPTURED_OUT_BYTES)
    for key in ("info", "result"):
        section = doc.get(key)
        if not isinstance(section, dict):
            continue
        by_size = sorted(section, key=lambda k: _encoded_size({"v": section[k]}), reverse=True)
        for item in by_size:
            if _encoded_size(doc) <= MAX_RUN_DOCUMENT_BYTES:
                return doc
            dropped = _encoded_size({"v": section[item]})
            section[item] = f"<dropped by kd_plugin: {dropped} bytes, over the run document budget>"
    if _encoded_size(doc) > MAX_RUN_DOCUMENT_BYTES and not isinstance(doc.get("result"), dict):
        doc["result"] = "<dropped by kd_plugin: over the run document budget>"
    return doc
