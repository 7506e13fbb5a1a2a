"""The runs table: one call, one pandas DataFrame, one row per Sacred run.

    from analysis import load_runs
    runs = load_runs(T=2, alpha_cos=1, status="COMPLETED")          # distill runs by default
    runs = load_runs(student__layers="alternate", since="2026-11-01")
    runs = load_runs(experiment="finetune", **{"data.task": "mr"})

Columns (index ``run_id``, the Sacred ``_id``):

* ``experiment``, ``status``, ``variant`` (the paper ablation variant, :func:`analysis.variants.variant_of` from
  the config, else the sweep's tag), ``sweep`` and ``comment`` (Sacred's ``-c``, see :mod:`analysis.run_tags`),
  ``host`` (hostname), ``start_time``, ``stop_time`` (UTC), ``duration_s`` (to the stop time, or to the last
  heartbeat of a run that has not stopped);
* every config value under its dotted name: ``T``, ``alpha_ce``, ``student.layers``, ``student.n_layers``,
  ``optim.lr``, ... (lists become tuples so they can be grouped on; a config key that clashes with one of the
  names above is called ``config.<key>``);
* ``result.<key>`` for the run's return value;
* ``final.<metric>`` and ``best.<metric>`` per logged metric (:mod:`analysis.metric_series`);
* ``downstream.*`` from evaluation runs that point back to the run (:mod:`analysis.downstream`).

Filters (:mod:`analysis.query`) become one MongoDB query, so only matching runs leave the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
from pymongo.database import Database

from analysis.connection import open_database
from analysis.downstream import DOWNSTREAM_EXPERIMENT, downstream_results
from analysis.flatten import flatten, hashable
from analysis.metric_series import fetch_long, summarise
from analysis.query import build_run_query, config_key
from analysis.run_tags import parse_tags
from analysis.variants import variant_of

META_COLUMNS = [
    "experiment", "status", "variant", "sweep", "comment", "host", "start_time", "stop_time", "duration_s",
]
DERIVED_PREFIXES = ("result.", "final.", "best.", "downstream.")
_PROJECTION = {
    "experiment.name": 1, "config": 1, "status": 1, "host.hostname": 1, "start_time": 1, "stop_time": 1,
    "heartbeat": 1, "result": 1, "meta.comment": 1,
}


def config_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of a runs table that hold config values (neither metadata nor results)."""
    return [
        c for c in runs.columns
        if c not in META_COLUMNS and c != "result" and not str(c).startswith(DERIVED_PREFIXES)
    ]


def _row(doc: dict[str, Any]) -> dict[str, Any]:
    comment = (doc.get("meta") or {}).get("comment")
    tags = parse_tags(comment)
    config = flatten(doc.get("config") or {})
    start, stop = doc.get("start_time"), doc.get("stop_time")
    end = stop or doc.get("heartbeat")
    row: dict[str, Any] = {
        "experiment": (doc.get("experiment") or {}).get("name"),
        "status": doc.get("status"),
        "variant": variant_of(config) or tags.get("variant"),
        "sweep": tags.get("sweep"),
        "comment": comment,
        "host": (doc.get("host") or {}).get("hostname"),
        "start_time": start,
        "stop_time": stop,
        "duration_s": (end - start).total_seconds() if start and end else None,
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
    embedded server and ``kd_plugin``). experiment: name, several, or None for all. status: e.g. "COMPLETED"
    or several. since/until: start-time range (UTC). sweep: only runs of this sweep. run_ids: only these runs.
    metrics/downstream: False skips the ``final.``/``best.`` resp. ``downstream.`` columns (faster).
    **config_filters: config values, ``T=2``, ``student__layers="alternate"``, ``**{"student.layers": ...}``.
    """
    database = open_database(url, db)
    query = build_run_query(experiment, status, since, until, sweep, run_ids, config_filters)
    docs = list(database.runs.find(query, _PROJECTION).sort("_id", 1))
    if not docs:
        if config_filters:
            _check_config_keys(database, experiment, config_filters)
        return _empty_table()

    table = pd.DataFrame.from_records([_row(d) for d in docs], index=[int(d["_id"]) for d in docs])
    table.index.name = "run_id"
    for column in ("start_time", "stop_time"):
        table[column] = pd.to_datetime(table[column])
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
