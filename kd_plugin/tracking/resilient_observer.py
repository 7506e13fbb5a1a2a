"""A Sacred MongoDB observer whose writes never fail the run, and which catches up when the database returns.

Sacred's MongoObserver writes synchronously; if the database goes away, the failing heartbeat marks the observer
as failed (nothing more is saved for that run) and the final save ends in a ``sacred_mongo_fail_*.pickle``
(without the metrics logged since). Here instead:

* every event updates an in-memory :class:`RunRecord` (the run document, the metric series, files to upload),
  then tries to write the whole difference to the database with short time-outs;
* a failed write is not an error: the record is saved to a local :class:`Journal`, one warning is printed,
  and the next heartbeat (every ``beat_interval`` s, 10 s by default; ``-b`` changes it) tries again;
* once a write succeeds again, the database holds everything (the run document, every metric point, every
  artifact), the journal is removed and a line says so;
* at the end of the run (completed, failed, interrupted) it keeps retrying for up to ``final_wait`` seconds;
  if the database is still away, the journal stays and the exact import command is printed.

The journal's directory is tried before the run starts (:meth:`check_journal_dir`: a configuration error
naming ``KD_RUNS_DIR``), so "the record is saved" is a promise that can be kept. If the journal cannot be written
later anyway (a full disk) while the database is away, nothing claims the record is saved: the end of the run
says plainly what is lost, and :attr:`record_lost` makes the process exit non-zero
(:func:`kd_plugin.tracking.sacred_experiment.run_main`).

Credentials the database refuses are not an outage (:mod:`kd_plugin.tracking.access`): :meth:`check_access`
(called before the run starts) and the run's first write stop the run with one line and exit status 2.

Once the database has been reached, a background thread does the upkeep that must never delay or fail a run:
the indexes (:func:`kd_plugin.tracking.run_record.ensure_indexes`) and the died mark (status FAILED) of runs whose heartbeat
stopped (:func:`kd_plugin.tracking.dead_runs.mark_dead_runs`).

The documents have exactly the structure MongoObserver writes, plus a ``kd_tracking`` field (see run_record).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pymongo
from sacred.dependencies import get_digest
from sacred.observers.base import RunObserver
from sacred.observers.mongo import MongoObserver
from sacred.serializer import flatten

from kd_plugin.errors import exit_on_config_error
from kd_plugin.tracking.access import CHECK_TIMEOUT_S, is_refusal, refusal_error, user_name
from kd_plugin.tracking.credentials import mask_url
from kd_plugin.tracking.dead_runs import STATUS_MARKED, mark_dead_runs
from kd_plugin.tracking.journal import Journal
from kd_plugin.tracking.locations import check_runs_dir, import_command, pending_dir
from kd_plugin.tracking.metric_series import DEFAULT_MAX_POINTS
from kd_plugin.tracking.run_record import RunRecord, ensure_indexes

DEFAULT_TIMEOUT_MS = 3000  # a write to a database that is away fails after this, instead of hanging
DEFAULT_FINAL_WAIT_S = 60.0  # how long the end of a run waits for the database to come back
ENV_FINAL_WAIT = "KD_TRACKING_FINAL_WAIT"  # overrides DEFAULT_FINAL_WAIT_S (seconds), e.g. 0 in CI
INTERRUPTED_FINAL_WAIT_S = 10.0  # after Ctrl-C the user wants the prompt back soon
UPKEEP_JOIN_S = 10.0  # how long the end of a run waits for the upkeep thread (indexes, dead runs)
DEFAULT_URL_KEY = "the MongoDB URL"  # names the URL in messages when the caller does not say where it came from
_RETRY_PAUSE_S = 1.0


class ResilientMongoObserver(RunObserver):
    priority = 30  # Sacred's MongoObserver priority

    def __init__(
        self,
        url: str,
        db_name: str,
        *,
        journal_dir: str | os.PathLike | None = None,
        final_wait: float | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        max_metric_points: int = DEFAULT_MAX_POINTS,
        import_url_hint: str | None = None,
        url_key: str = DEFAULT_URL_KEY,
    ):
        """``url`` may hold credentials: it is used to connect and never printed or stored (``display_url`` is
        the masked form). ``import_url_hint`` is the ``--url`` shown in the import command (None: the
        import command finds the database itself, from KD_MONGO_URL or the embedded server). ``final_wait``
        defaults to ``$KD_TRACKING_FINAL_WAIT`` or 60 s. ``url_key`` names where the URL came from
        (``KD_MONGO_URL``, ``tracking.mongo_url``) in the error for refused credentials.

        Raises pymongo's ``ConfigurationError`` for a URL it cannot use (see :mod:`kd_plugin.tracking.access`)."""
        self.display_url = mask_url(url)
        self.url_key = url_key
        self.user = user_name(url)
        self.db_name = db_name
        self.journal_dir = Path(journal_dir) if journal_dir is not None else pending_dir()
        if final_wait is None:
            final_wait = float(os.environ.get(ENV_FINAL_WAIT) or DEFAULT_FINAL_WAIT_S)
        self.final_wait = final_wait
        self.max_metric_points = max_metric_points
        self.import_url_hint = import_url_hint
        self._client = pymongo.MongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(60_000, timeout_ms),  # artifacts can be large
            appname="kd_plugin",
        )
        self._db = self._client[db_name]
        self._lock = threading.RLock()  # heartbeat thread vs main thread
        self.record: RunRecord | None = None
        self.journal: Journal | None = None
        self.in_sync = True  # False from a failed write until the next successful one
        self._finished = False
        self._starting = False  # in the run's first write (the only one whose refusal stops the run)
        self._refusal: Exception | None = None
        self._upkeep: threading.Thread | None = None
        self.journal_error: Exception | None = None  # why the last journal write failed (None: it worked)
        self.record_lost = False  # the run ended with its record neither in the database nor in the journal

    def __repr__(self) -> str:
        return f"ResilientMongoObserver({self.display_url}, db={self.db_name!r})"

    def check_access(self) -> None:
        """Raise :class:`kd_plugin.errors.ConfigError` if the database refuses this URL's credentials (a read of
        the ``runs`` collection). An unreachable database passes: that is an outage, handled during the run."""
        try:
            with pymongo.timeout(CHECK_TIMEOUT_S):
                self._db["runs"].find_one({}, {"_id": 1})
        except pymongo.errors.PyMongoError as exc:
            if is_refusal(exc):
                raise refusal_error(self.url_key, self.display_url, self.db_name, exc) from None

    def check_journal_dir(self) -> None:
        """Raise :class:`kd_plugin.errors.ConfigError` (``KD_RUNS_DIR``) if the journal directory cannot be
        written: the run's record would have nowhere to go while the database is away."""
        check_runs_dir(self.journal_dir, "this run's record whenever the database does not answer (its journal)")

    # ------------------------------------------------------------------------------------ Sacred events
    def queued_event(self, ex_info, command, host_info, queue_time, config, meta_info, _id):
        entry = self._new_entry(ex_info, command, host_info, config, meta_info, _id)
        entry["status"] = "QUEUED"
        return self._begin(entry, ex_info)

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        entry = self._new_entry(ex_info, command, host_info, config, meta_info, _id)
        entry.update(
            {
                "format": MongoObserver.VERSION,
                "start_time": start_time,
                "status": "RUNNING",
                "resources": [],
                "artifacts": [],
                "captured_out": "",
                "info": {},
                "heartbeat": None,
            }
        )
        return self._begin(entry, ex_info)

    def log_metrics(self, metrics_by_name, info):
        with self._lock:
            if self.record is None:
                return
            self.record.add_metrics(metrics_by_name)
            if self._finished:  # a last heartbeat after the end: nothing else will write these points
                self.record.finish_metrics()
                self._sync()

    def heartbeat_event(self, info, captured_out, beat_time, result):
        with self._lock:
            if self.record is None:
                return
            entry = self.record.entry
            entry["info"] = flatten(info)
            entry["captured_out"] = captured_out
            entry["heartbeat"] = beat_time
            entry["result"] = flatten(result)
            self._sync()

    def resource_event(self, filename):
        with self._lock:
            if self.record is None:
                return
            resource = [filename, get_digest(filename)]
            if resource not in self.record.entry["resources"]:
                self.record.entry["resources"].append(resource)
                self._sync_soon()

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        with self._lock:
            if self.record is None:
                return
            if content_type is None:
                content_type = _guess_content_type(filename)
            self.record.add_artifact(name, filename, metadata=metadata, content_type=content_type)
            self._sync_soon()

    def completed_event(self, stop_time, result):
        self._finish(self.final_wait, stop_time=stop_time, result=flatten(result), status="COMPLETED")

    def interrupted_event(self, interrupt_time, status):
        self._finish(min(self.final_wait, INTERRUPTED_FINAL_WAIT_S), stop_time=interrupt_time, status=status)

    def failed_event(self, fail_time, fail_trace):
        self._finish(self.final_wait, stop_time=fail_time, status="FAILED", fail_trace=fail_trace)

    # --------------------------------------------------------------------------------------- internals
    def _new_entry(self, ex_info, command, host_info, config, meta_info, _id) -> dict[str, Any]:
        entry = {
            "experiment": dict(ex_info, sources=[]),  # filled with [name, GridFS id] once uploaded
            "command": command,
            "host": dict(host_info),
            "config": flatten(config),
            "meta": meta_info,
        }
        if _id is not None:
            entry["_id"] = _id
        return entry

    def _begin(self, entry: dict[str, Any], ex_info) -> Any:
        with self._lock:
            run_key = uuid.uuid4().hex
            self.record = RunRecord(entry, run_key, self.db_name, max_metric_points=self.max_metric_points)
            for name, md5 in ex_info["sources"]:
                try:
                    self.record.add_source(name, os.path.join(ex_info["base_dir"], name), md5)
                except OSError as exc:  # a source Sacred listed but that cannot be read: not worth failing for
                    self.record.notes.append(f"source {name!r} not stored: {exc}")
            self.journal = Journal(self.journal_dir / run_key)
            self._finished = False
            self._starting = True
            try:
                self._sync()
            finally:
                self._starting = False
            if self._refusal is not None:
                self._stop_refused()
            return self.record.run_id  # None if the database was away: the id is allocated on reconnection

    def _stop_refused(self) -> None:
        """The first write was refused (e.g. a user who may read but not write): record nothing and stop the
        run before its main function, with the one-line configuration error (exit status 2)."""
        exc, self._refusal, self.record = self._refusal, None, None
        with exit_on_config_error():
            raise refusal_error(self.url_key, self.display_url, self.db_name, exc)

    def _finish(self, wait: float, **fields: Any) -> None:
        with self._lock:
            if self.record is None:
                return
            self.record.entry.update(fields)
            self.record.finish_metrics()
            self._finished = True
            if self._upkeep is not None:
                self._upkeep.join(timeout=min(wait, UPKEEP_JOIN_S))
            deadline = time.monotonic() + wait
            while not self._sync():
                if time.monotonic() >= deadline:
                    if self.journal_error is None:
                        self._warn_left_in_journal(wait)
                    else:
                        self.record_lost = True
                        self._warn_not_saved(wait)
                    return
                time.sleep(_RETRY_PAUSE_S)

    def _sync_soon(self) -> None:
        """Write now if the database was reachable last time; else keep it for the next heartbeat, so the
        training thread never waits for time-outs (the journal still gets it at once)."""
        if self.in_sync or self._finished:
            self._sync()
        else:
            self._save_journal()

    def _sync(self) -> bool:
        """Try to bring the database up to date. Never raises: a failure is journalled and reported once."""
        try:
            self.record.write_to(self._db)
        except Exception as exc:  # noqa: BLE001 -- the run must go on, whatever the database does
            if self._starting and is_refusal(exc):
                self._refusal = exc  # refused credentials, not an outage: _begin stops the run
                return False
            first = self.in_sync
            self.in_sync = False
            self._save_journal(announce=not first)
            if first:
                self._warn_lost(exc)
            return False
        if not self.in_sync:
            _say(
                f"tracking: {self.display_url} (database {self.db_name!r}) is reachable again; run "
                f"{self.record.run_id} is up to date there."
            )
        self.in_sync = True
        if self.journal is not None and self.journal.exists():
            self.journal.remove()
        if self._upkeep is None:
            self._start_upkeep()
        return True

    def _start_upkeep(self) -> None:
        """Once per observer, after the first successful write: indexes and dead runs, in the background."""
        self._upkeep = threading.Thread(target=self._keep_database_tidy, args=(self.record.run_id,),
                                        name="kd-tracking-upkeep", daemon=True)
        self._upkeep.start()

    def _keep_database_tidy(self, own_run_id: Any) -> None:
        """Best effort: a failure is one line, never an error of the run."""
        for what, job in (("create the indexes", lambda: ensure_indexes(self._db)),
                          ("mark dead runs", lambda: self._mark_dead_runs(own_run_id))):
            try:
                job()
            except Exception as exc:  # noqa: BLE001
                _say(f"tracking: could not {what} in {self.display_url} (database {self.db_name!r}): "
                     f"{type(exc).__name__}: {mask_url(str(exc))[:160]}")

    def _mark_dead_runs(self, own_run_id: Any) -> None:
        marked = mark_dead_runs(self._db, exclude=[own_run_id])
        if marked:
            shown = ", ".join(str(run_id) for run_id in marked[:10]) + (", ..." if len(marked) > 10 else "")
            _say(f"tracking: marked {len(marked)} run(s) {STATUS_MARKED} (died) in database {self.db_name!r} (status RUNNING, "
                 f"but no heartbeat for longer than the dead-run threshold; see kd_plugin/tracking/dead_runs.py): {shown}")

    def _save_journal(self, announce: bool = True) -> None:
        """Write the journal; a failure is remembered (:attr:`journal_error`) and said once, in one line."""
        try:
            self.journal.write(self.record)
        except Exception as exc:  # noqa: BLE001
            if self.journal_error is None and announce:
                _say(f"tracking: could not write the journal {self.journal.dir} ({_describe(exc)}); until "
                     f"{self.display_url} answers again, this run's record is only in this process's memory.")
            self.journal_error = exc
            return
        if self.journal_error is not None and announce:
            _say(f"tracking: the journal {self.journal.dir} is written again.")
        self.journal_error = None

    def _warn_lost(self, exc: Exception) -> None:
        kept = (f"in memory and in {self.journal.dir}" if self.journal_error is None else
                f"in memory only: the journal {self.journal.dir} could not be written ({_describe(self.journal_error)})")
        _say(
            f"tracking: cannot write to {self.display_url} (database {self.db_name!r}): "
            f"{type(exc).__name__}: {mask_url(str(exc))[:160]}\n"
            f"tracking: training goes on; the run's record is kept {kept}, "
            "and is written to the database as soon as it is reachable again."
        )

    def _warn_not_saved(self, waited: float) -> None:
        """The run ended; its record is neither in the database nor in a journal: say what is lost."""
        if self.record.run_id is None:
            lost = "This run is in no database: its whole record (config, status, metrics, artifacts) is lost."
        else:
            lost = (f"The database holds run {self.record.run_id} as it was at its last successful write; "
                    "everything since (final status, result, metric points, artifacts, output) is lost.")
        _say(
            "\n" + "!" * 100 + "\n"
            f"!! tracking: NOT SAVED. {self.display_url} (database {self.db_name!r}) is still unreachable after "
            f"waiting {waited:g} s,\n"
            f"!! and the journal {self.journal.dir} could not be written ({_describe(self.journal_error)}).\n"
            f"!! {lost}\n"
            "!! The run's own output files (its output_dir) are not affected.\n"
            + "!" * 100
        )

    def _warn_left_in_journal(self, waited: float) -> None:
        command = import_command(self.journal.dir, self.import_url_hint, self.db_name)
        run = f"run {self.record.run_id}" if self.record.run_id is not None else "this run"
        _say(
            "\n" + "!" * 100 + "\n"
            f"!! tracking: {self.display_url} (database {self.db_name!r}) is still unreachable after waiting "
            f"{waited:g} s.\n"
            f"!! The complete record of {run} (document, metrics, artifacts) is saved in\n"
            f"!!     {self.journal.dir}\n"
            "!! Write it to MongoDB once the database is back with:\n"
            f"!!     {command}\n"
            + ("!! (with the password in place of ***)\n" if "***" in command else "")
            + "!" * 100
        )


def _guess_content_type(filename: str) -> str | None:
    from sacred.observers.mongo import mimetype_detector

    return mimetype_detector.guess_type(filename)[0]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {mask_url(str(exc))[:200]}"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
