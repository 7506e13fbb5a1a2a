"""The runs table: one call, one pandas DataFrame, one row per Sacred run.

    from analysis import load_runs
    runs = load_runs(T=2, alpha_cos=1, status="COMPLETED")          # distill runs by default
    runs = load_runs(student__layers="alternate", since="2026-11-01")
    runs = load_runs(experiment="finetune", **{"data.task": "mr"})

Columns (index ``run_id``, the Sacred ``_id``):

* ``experiment``, ``status``, ``family`` and ``objective`` (the teacher's model family and training objective:
  ``bert``/``masked_lm``, ``gpt2``/``causal_lm``, ...; NA for runs that built no student), ``variant`` (the paper
  ablation variant, :func:`kd_plugin.ablation.variant_of` from the config, else the sweep's tag), ``sweep`` and
  ``comment`` (Sacred's ``-c``, see :mod:`kd_plugin.tracking.run_tags`), ``host`` (hostname), ``code_commit`` and
  ``code_dirty`` (the git commit of the code that ran, and whether tracked files differed from it; NA for runs
  that record none), ``world_size`` (processes that trained it) and ``launcher`` (``torchrun``, ``deepspeed``,
  ``none``; NA for runs that record no launch), ``deepspeed_settings`` (a digest of the DeepSpeed config the
  engine got, its monitor blocks left out: two checkouts' copies of one JSON file give the same digest, where the
  ``deepspeed_config`` column holds each one's path; NA for runs that built no engine), ``start_time``,
  ``stop_time`` (UTC), ``duration_s`` (to the stop time, or to the last heartbeat of a run that has not stopped);
* ``resumed_from_run`` (the run whose checkpoint this run started from) and ``resumed_by_run`` (the run that
  resumed this one), NA where none; :func:`analysis.load_metrics` ``follow_resumes=True`` stitches the curves;
* every config value under its dotted name: ``T``, ``alpha_ce``, ``student.layers``, ``student.n_layers``,
  ``optim.lr``, ... (lists become tuples so they can be grouped on; a config key that clashes with one of the
  names above is called ``config.<key>``);
* ``result.<key>`` for the run's return value;
* ``final.<metric>`` and ``best.<metric>`` per logged metric (:mod:`analysis.logged_metrics`);
* ``downstream.*`` from evaluation runs that point back to the run (:mod:`analysis.downstream`).

Filters (:mod:`analysis.query`) become one MongoDB query, so only matching runs leave the database.

Dead runs: a run recorded RUNNING whose heartbeat stopped (``kill -9``, a lost machine) is shown with status
``FAILED``, ``died`` = True and ``stop_time`` = its last heartbeat, by the rule of
:mod:`kd_plugin.tracking.dead_runs` (no heartbeat for ``$KD_DEAD_AFTER_S`` s, else max(60 s, 3 heartbeat
intervals)). The analysis never writes: the next run saved to the database records such runs FAILED (with a
``fail_trace`` saying so and ``kd_tracking.died``) in the database itself. ``status="FAILED"`` /
``status="RUNNING"`` filter on the status as shown; ``status="DIED"`` selects the runs that died.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pandas as pd
from pymongo.database import Database

from analysis.connection import open_database
from analysis.downstream import DOWNSTREAM_EXPERIMENT, downstream_results
from analysis.flatten import flatten, hashable
from analysis.logged_metrics import fetch_long, summarise
from analysis.query import build_run_query, config_key
from kd_plugin.ablation import variant_of
from kd_plugin.tracking.dead_runs import (
    RULE_FIELDS,
    STATUS_DIED,
    STATUS_MARKED,
    last_sign_of_life,
    looks_dead,
    naive_utc,
    utc_now,
)
from kd_plugin.tracking.resume_links import RESUMED_BY_RUN, RESUMED_FROM_RUN
from kd_plugin.tracking.run_tags import parse_tags
from kd_plugin.training.ds_config import MONITOR_PACKAGES

META_COLUMNS = [
    "experiment", "status", "died", "family", "objective", "variant", "sweep", "comment", "host", "code_commit",
    "code_dirty", "world_size",
    "launcher", "deepspeed_settings", "start_time", "stop_time", "duration_s",
    RESUMED_FROM_RUN, RESUMED_BY_RUN,
]
DERIVED_PREFIXES = ("result.", "final.", "best.", "downstream.")
_PROJECTION = {
    "experiment.name": 1, "config": 1, "status": 1, "host.hostname": 1, "start_time": 1, "stop_time": 1,
    "heartbeat": 1, "result": 1, "meta.comment": 1, "info.student_summary": 1, "info.engine.world_size": 1,
    "info.ranks": 1, "info.deepspeed_config": 1, "info.code": 1, "kd_tracking.died": 1,
    f"info.{RESUMED_FROM_RUN}": 1, f"info.{RESUMED_BY_RUN}": 1,
    **RULE_FIELDS,
}


def config_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of a runs table that hold config values (neither metadata nor results)."""
    return [
        c for c in runs.columns
        if c not in META_COLUMNS and c != "result" and not str(c).startswith(DERIVED_PREFIXES)
    ]


def deepspeed_digest(ds_config: dict[str, Any] | None) -> str | None:
    """12 hex digits of the SHA-256 of the engine's DeepSpeed config as canonical JSON, less its monitor blocks
    (where metrics are also written: bookkeeping, and their output paths differ from run to run)."""
    if not isinstance(ds_config, dict):
        return None
    kept = {key: value for key, value in ds_config.items() if key not in MONITOR_PACKAGES}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _row(doc: dict[str, Any], now) -> dict[str, Any]:
    comment = (doc.get("meta") or {}).get("comment")
    tags = parse_tags(comment)
    config = flatten(doc.get("config") or {})
    # Naive UTC whatever the client's tz_aware setting, so durations and the died rule never mix the two kinds.
    status, start, stop = doc.get("status"), naive_utc(doc.get("start_time")), naive_utc(doc.get("stop_time"))
    died = bool((doc.get("kd_tracking") or {}).get("died"))
    if looks_dead(doc, now):  # RUNNING in the database, but its heartbeat stopped (kd_plugin.tracking.dead_runs)
        status, stop, died = STATUS_MARKED, last_sign_of_life(doc), True
    end = stop or naive_utc(doc.get("heartbeat"))
    info = doc.get("info") or {}
    row: dict[str, Any] = {
        "experiment": (doc.get("experiment") or {}).get("name"),
        "status": status,
        "died": died,
        "family": (info.get("student_summary") or {}).get("family"),
        "objective": (info.get("student_summary") or {}).get("objective"),
        "variant": variant_of(config) or tags.get("variant"),
        "sweep": tags.get("sweep"),
        "comment": comment,
        "host": (doc.get("host") or {}).get("hostname"),
        "code_commit": (info.get("code") or {}).get("commit"),
        "code_dirty": (info.get("code") or {}).get("dirty"),
        "world_size": (info.get("engine") or {}).get("world_size"),
        "launcher": ((info.get("ranks") or [{}])[0] or {}).get("launcher"),
        "deepspeed_settings": deepspeed_digest(info.get("deepspeed_config")),
        "start_time": start,
        "stop_time": stop,
        "duration_s": (end - start).total_seconds() if start and end else None,
        RESUMED_FROM_RUN: info.get(RESUMED_FROM_RUN),
        RESUMED_BY_RUN: info.get(RESUMED_BY_RUN),
    }
    for key, value in config.items():
        row[f"config.{key}" if key in META_COLUMNS else key] = value
    result = doc.get("result")
    if isinstance(result, dict):
        row.update(flatten(result, prefix="result."))
    elif result is not None:
        row["result"] = hashable(result)
    return row


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=META_COLUMNS, index=pd.Index([], name="run_id", dtype="int64"))


class UnknownConfigKey(KeyError):
    """A config filter names a key that no run of the experiment has (most likely a typo)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _check_config_keys(db: Database, experiment: Any, config_filters: dict[str, Any]) -> None:
    """A filter on a config key that no run of the experiment has is a typo: say so instead of returning
    an empty table silently (only checked when the query matched nothing)."""
    base = build_run_query(experiment=experiment)
    sample = db.runs.find_one(base, {"config": 1})
    if sample is None:
        return  # no runs at all: nothing to compare against
    for name in config_filters:
        key = config_key(name)
        if db.runs.find_one({**base, f"config.{key}": {"$exists": True}}, {"_id": 1}) is None:
            known = ", ".join(sorted(flatten(sample.get("config") or {})))
            raise UnknownConfigKey(f"no {experiment or 'any'} run has the config key {key!r}; keys of run "
                           f"{sample['_id']}: {known}")


def load_runs(
    url: str | None = None,
    db: str | Database | None = None,
    experiment: str | Iterable[str] | None = "distill",
    status: str | Iterable[str] | None = None,
    since: Any = None,
    until: Any = None,
    *,
    sweep: str | None = None,
    run_ids: Iterable[int] | None = None,
    metrics: bool = True,
    downstream: bool = True,
    **config_filters: Any,
) -> pd.DataFrame:
    """One row per run matching every filter; see the module docstring for columns and :mod:`analysis.query`
    for the filter forms.

    url, db: where to read (:mod:`analysis.connection`: argument, ``$KD_MONGO_URL``/``$KD_MONGO_DB``, else the
    embedded server if it is running, and ``kd_plugin``). experiment: name, several, or None for all. status: e.g. "COMPLETED"
    or several, as shown (``"FAILED"`` includes runs still RUNNING in the database whose heartbeat stopped;
    ``"DIED"`` selects the runs that died without a word, marked or not). since/until: start-time range (UTC). sweep: only runs of this sweep. run_ids: only these runs.
    metrics/downstream: False skips the ``final.``/``best.`` resp. ``downstream.`` columns (faster).
    **config_filters: config values, ``T=2``, ``student__layers="alternate"``, ``**{"student.layers": ...}``.
    """
    database = open_database(url, db)
    wanted = None if status is None else ({status} if isinstance(status, str) else set(status))
    if wanted is not None and not isinstance(status, str):
        status = sorted(wanted)
    if wanted is not None and wanted & {STATUS_DIED, STATUS_MARKED}:
        # runs still RUNNING in the database whose heartbeat stopped are shown FAILED (died)
        status = sorted((wanted - {STATUS_DIED}) | {"RUNNING", STATUS_MARKED})
    query = build_run_query(experiment, status, since, until, sweep, run_ids, config_filters)
    now = utc_now()
    rows = {int(doc["_id"]): _row(doc, now) for doc in database.runs.find(query, _PROJECTION).sort("_id", 1)}
    if wanted is not None:  # the status as shown (a dead RUNNING run is FAILED); "DIED": the runs that died
        rows = {run_id: row for run_id, row in rows.items()
                if row["status"] in wanted or (STATUS_DIED in wanted and row["died"])}
    if not rows:
        if config_filters:
            _check_config_keys(database, experiment, config_filters)
        return _empty_table()

    table = pd.DataFrame.from_records(list(rows.values()), index=list(rows))
    table.index.name = "run_id"
    for column in ("start_time", "stop_time"):
        table[column] = pd.to_datetime(table[column])
    for column in (RESUMED_FROM_RUN, RESUMED_BY_RUN):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")  # run ids, NA where none
    parts = [table]
    if metrics:
        parts.append(summarise(fetch_long(database, table.index)))
    if downstream and experiment != DOWNSTREAM_EXPERIMENT:
        parts.append(downstream_results(database, table.index))
    table = pd.concat(parts, axis=1, join="outer").loc[table.index]
    table.index.name = "run_id"
    if "downstream.run_id" in table.columns:
        table["downstream.run_id"] = table["downstream.run_id"].astype("Int64")  # an id, NA where none
    return table
