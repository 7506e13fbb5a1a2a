"""Link an evaluation run to the distillation run whose student it evaluates.

``distill_run_id`` is the Sacred ``_id`` of that run in the MongoDB database the runs are saved to. With a database
reachable, the run's document gives the student directory (``info.student_dir``, else ``result.student_dir``)
and its teacher (``config.teacher``, the size/speed reference). The id is recorded in the evaluation run's config
and info in any case, so the analysis table can join the two runs even when no lookup was possible.

Which database: the one rule of :func:`kd_plugin.tracking.locations.resolve_database`, with ``distill_db.url`` /
``distill_db.name`` as the explicit argument: ``distill_db.*``, else ``KD_MONGO_URL`` / ``KD_MONGO_DB``, else
``tracking.mongo_url`` / ``tracking.db_name``, else the embedded SecantusDB server if it is running (a lookup never
starts it) and ``kd_plugin``. That is the database this evaluation run is saved to, so with the defaults a distill
run and its evaluations are in one database and the lookup needs no setting. (Sacred's ``-m`` flag is not seen
here: with it, give ``distill_db.url`` / ``distill_db.name`` too.)

``model`` with ``distill_run_id`` must be that run's student (its recorded folder, or a folder whose model card
names the run): any other model is refused, so no score is shown as another model's.

``model``, ``distill_run_id``, ``distill_db.*`` and the ``tracking.*`` block arrive parsed, as a
:class:`ModelSource` (part of :class:`kd_plugin.downstream.finetune_config.FinetuneConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.declarations import Block, setting
from kd_plugin.errors import ConfigError


def _model(value: Any, key: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(key, f"{value!r} is not a model name or directory", "a directory, catalogue name or null")
    return value


def _run_id(value: Any, key: str) -> int | str | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise ConfigError(key, f"{value!r} is not a run id", "a Sacred run id (integer) or null")
    return value


@dataclass(frozen=True)
class DistillDatabase:
    """``distill_db.*``: where the distillation run is saved; null = where this evaluation run is saved."""

    url: str | None = setting(None, "MongoDB URL of the distill run's database; null = where this run is saved",
                              partial(values.text, allow_none=True, what="a MongoDB URL"), field_default=True,
                              bookkeeping=True)
    name: str | None = setting(None, "its database name; null = this run's", partial(
        values.text, allow_none=True, what="a database name"), field_default=True, bookkeeping=True)


@dataclass(frozen=True)
class ModelSource:
    """Which model is evaluated: ``model``, else the student of the saved run ``distill_run_id``."""

    model: str | None = setting(None, "model directory (e.g. a distilled student), catalogue name (bert-tiny, "
                                "minilm-l6, random-tiny), hub id", _model)
    distill_run_id: int | str | None = setting(None, "Sacred id of the distillation run whose student this "
                                               "evaluates (recorded; the model from it if model=null)", _run_id)
    distill_db: DistillDatabase
    tracking: Mapping[str, Any] = field(default_factory=dict)  # the experiment's tracking.* block (the database rule)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> ModelSource:
        """From the finetune config's top level (``model``, ``distill_run_id``, ``distill_db``, ``tracking``)."""
        source = SOURCE.parse(cfg)
        db = values.block(cfg, "distill_db", sorted(DISTILL_DB.names()), none_is_empty=True)
        tracking = cfg.get("tracking") or {}
        if not isinstance(tracking, Mapping):
            raise ConfigError("tracking", f"{tracking!r} is not a mapping", "tracking.mongo_url, tracking.db_name")
        return cls(**source, distill_db=DistillDatabase(**DISTILL_DB.parse(db)),
                   tracking=MappingProxyType(dict(tracking)))


SOURCE = Block.of("", "which model is evaluated", ModelSource)
DISTILL_DB = Block.of("distill_db", "where the distill run is saved; null = where this run is saved (tracking.*)",
                      DistillDatabase)


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


def distill_database(source: ModelSource) -> tuple[str | None, str]:
    """(URL or None, database name) where the distillation run is looked for (see the module docstring)."""
    from kd_plugin.tracking.locations import resolve_database, resolve_db_name

    db, tracking = source.distill_db, dict(source.tracking)
    destination = resolve_database(db.url, db.name, tracking, embedded="running", explicit="distill_db.url")
    if destination is None:
        return None, resolve_db_name(db.name, tracking)
    return destination.url, destination.db_name


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


def resolve_evaluated_model(source: ModelSource) -> ResolvedModel:
    """``model`` if given, else the student directory of ``distill_run_id``; a ConfigError when neither works."""
    model, run_id = source.model, source.distill_run_id
    if run_id is None:
        if model is None:
            raise ConfigError("model", "no model to evaluate", "a model directory or catalogue name, "
                              "or distill_run_id=<id of a saved distillation run>")
        return ResolvedModel(model, None, None, "no distill_run_id")
    from kd_plugin.tracking.credentials import mask_url  # never print or store a password

    url, name = distill_database(source)
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
    else:
        check_model_is_the_runs_student(model, run_id, run)
    return ResolvedModel(model, run_id, run, lookup)


def check_model_is_the_runs_student(model: str, run_id: Any, run: DistillRun | None) -> None:
    """An explicit ``model`` with ``distill_run_id`` must be that run's student, or its scores would be shown as
    the run's downstream result: the same folder as the run's recorded ``student_dir``, or a folder whose model
    card names the run (an exported student, checked without a database)."""
    from pathlib import Path

    from kd_plugin.export.model_card import read_model_card

    folder = Path(model).expanduser()
    if run is not None and run.student_dir and folder.is_dir() and folder.resolve() == Path(run.student_dir).resolve():
        return
    card = read_model_card(folder) if folder.is_dir() else None
    if card is not None and card.run_id is not None and not card.in_file_storage and str(card.run_id) == str(run_id):
        return
    whose = (f"its student is {run.student_dir!r}" if run is not None and run.student_dir else
             "the run could not be looked up" if run is None else "the run recorded no student")
    raise ConfigError("model", f"{model!r} is not the student of distill run {run_id!r} ({whose}), so its scores "
                      "would be recorded as that run's", f"model=None (evaluate run {run_id}'s student), or no "
                      "distill_run_id (evaluate this model unlinked)")
