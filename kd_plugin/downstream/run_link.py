"""Link an evaluation run to the distillation run whose student it evaluates.

``distill_run_id`` is the Sacred ``_id`` of that run in the MongoDB database the runs are saved to. With a database
reachable, the run's document gives the student directory (``info.student_dir``, else ``result.student_dir``)
and its teacher (``config.teacher``, the size/speed reference). The id is recorded in the evaluation run's config
and info in any case, so the analysis table can join the two runs even when no lookup was possible.

Which database: ``distill_db.url`` / ``distill_db.name`` if set, else the database this evaluation run is saved to
(the experiment's ``tracking`` choice: ``KD_MONGO_URL``, ``tracking.mongo_url``, else the embedded SecantusDB server
if it is running; database ``KD_MONGO_DB``, ``tracking.db_name``, else ``kd_plugin``), so with the defaults a
distill run and its evaluations are in one database and the lookup needs no setting. (Sacred's ``-m`` flag is not
seen here: with it, give ``distill_db.url`` / ``distill_db.name`` too.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kd_plugin.errors import ConfigError


@dataclass(frozen=True)
class DistillRun:
    run_id: Any
    experiment: str | None
    status: str | None
    student_dir: str | None
    teacher: str | None


@dataclass(frozen=True)
class ResolvedModel:
    model: str  # what to load: a directory, catalogue name or hub id
    distill_run_id: Any
    distill_run: DistillRun | None
    lookup: str  # what happened to the lookup, for the run's info

    def info(self) -> dict[str, Any]:
        run = self.distill_run
        return {"model": self.model, "distill_run_id": self.distill_run_id, "distill_run_lookup": self.lookup,
                "distill_run": None if run is None else dict(run.__dict__)}


def distill_database(cfg: Mapping[str, Any]) -> tuple[str | None, str]:
    """(URL or None, database name) where the distillation run is looked for."""
    from kd_plugin.tracking.embedded_db import get_running_server
    from kd_plugin.tracking.locations import DEFAULT_DB_NAME, env_db_name
    from kd_plugin.tracking.observers import choose_database

    db = dict(cfg.get("distill_db") or {})
    tracking = dict(cfg.get("tracking") or {})
    name = db.get("name") or env_db_name() or tracking.get("db_name") or DEFAULT_DB_NAME
    if db.get("url"):
        return db["url"], name
    destination = choose_database(tracking)
    if destination is not None:
        return destination.url, name
    try:
        server = get_running_server()  # never started from here
    except Exception:  # no executable, unreadable state: no database
        server = None
    return (server.url if server is not None else None), name


def _id_candidates(run_id: Any) -> list[Any]:
    """Sacred's MongoObserver uses integer ids; accept "12" as well as 12."""
    if isinstance(run_id, str) and run_id.strip().isdigit():
        return [int(run_id), run_id]
    return [run_id]


def find_distill_run(run_id: Any, url: str, db_name: str, timeout_ms: int = 3000) -> DistillRun | None:
    """The run's document, or None if no run has that id. Raises ``pymongo.errors.PyMongoError`` if unreachable."""
    import pymongo

    with pymongo.MongoClient(url, serverSelectionTimeoutMS=timeout_ms) as client:
        doc = client[db_name]["runs"].find_one(
            {"_id": {"$in": _id_candidates(run_id)}},
            {"experiment.name": 1, "status": 1, "info.student_dir": 1, "result": 1, "config.teacher": 1},
        )
    if doc is None:
        return None
    result = doc.get("result") if isinstance(doc.get("result"), Mapping) else {}
    student_dir = (doc.get("info") or {}).get("student_dir") or result.get("student_dir")
    return DistillRun(doc["_id"], (doc.get("experiment") or {}).get("name"), doc.get("status"), student_dir,
                      (doc.get("config") or {}).get("teacher"))


def resolve_evaluated_model(cfg: Mapping[str, Any]) -> ResolvedModel:
    """``model`` if given, else the student directory of ``distill_run_id``; a ConfigError when neither works."""
    model, run_id = cfg.get("model"), cfg.get("distill_run_id")
    if run_id is None:
        if model is None:
            raise ConfigError("model", "no model to evaluate", "a model directory or catalogue name, "
                              "or distill_run_id=<id of a saved distillation run>")
        return ResolvedModel(model, None, None, "no distill_run_id")
    from kd_plugin.tracking.credentials import mask_url  # never print or store a password

    url, name = distill_database(cfg)
    run, lookup = None, "no database configured"
    if url is not None:
        try:
            run = find_distill_run(run_id, url, name)
            lookup = f"found in {mask_url(url)}/{name}" if run else f"not found in {mask_url(url)}/{name}"
        except Exception as exc:  # unreachable database: the id is still recorded
            lookup = f"database {mask_url(url)} unreachable ({type(exc).__name__})"
    if model is None:
        if run is None or not run.student_dir:
            problem = (f"distill run {run_id!r} has no recorded student_dir" if run is not None
                       else f"cannot look up distill run {run_id!r}: {lookup}")
            raise ConfigError("distill_run_id", problem, "the id of a saved distillation run in a reachable database "
                              "(the tracking database, or distill_db.url / distill_db.name), or give model=<student dir>")
        model = run.student_dir
    return ResolvedModel(model, run_id, run, lookup)
