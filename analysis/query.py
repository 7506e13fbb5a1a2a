"""User filters -> one MongoDB query on the ``runs`` collection (filtering happens in the database).

The forms users think in:

* config values by name: ``T=2``, ``alpha_cos=1`` (numbers match across int/float: ``T=2`` finds ``2.0``);
* nested config keys with a dot or a double underscore: ``**{"student.layers": "alternate"}`` or
  ``student__layers="alternate"``;
* one of several values: a set, range or :func:`one_of` (``seed={1, 2}``, ``seed=range(1, 4)``); a list or
  tuple means that exact (list) value, as config values can be lists (``optim.betas=[0.9, 0.98]``);
* ``None`` matches a key that is null or absent; a dict of MongoDB operators is passed through
  (``max_steps={"$gte": 100}``);
* status and experiment name: a string or several; a start-time range: ``since`` (inclusive) and ``until``.
  Times are UTC, as Sacred stores them; a date without a time (``"2026-11-25"``, ``datetime.date``) as
  ``until`` includes that whole day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from kd_plugin.tracking.run_tags import tag_pattern


class OneOf(tuple):
    """Marker for "any of these values" (``$in``)."""


def one_of(*values: Any) -> OneOf:
    """``load_runs(T=one_of(1, 2))``: runs whose ``T`` is 1 or 2."""
    return OneOf(values)


def config_key(name: str) -> str:
    """``student__layers`` -> ``student.layers`` (keyword arguments cannot contain dots)."""
    return name.replace("__", ".")


def _plain(value: Any) -> Any:
    """numpy scalars / tuples -> BSON-encodable Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)) and not isinstance(value, OneOf):
        return [_plain(v) for v in value]
    return value


def value_condition(value: Any) -> Any:
    """The MongoDB condition for one config filter value (see the module docstring)."""
    if isinstance(value, Mapping):
        if value and all(str(k).startswith("$") for k in value):
            return dict(value)
        raise ValueError(f"a dict filter value must hold MongoDB operators such as $gte, got {value!r}")
    if isinstance(value, (OneOf, set, frozenset, range)):
        return {"$in": [_plain(v) for v in value]}
    return _plain(value)


def _one_or_many(value: str | Iterable[str]) -> Any:
    if isinstance(value, str):
        return value
    return {"$in": list(value)}


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def to_utc_naive(value: Any) -> tuple[dt.datetime, bool]:
    """(naive UTC datetime, whether the value was a date without a time)."""
    if isinstance(value, str):
        date_only = bool(_DATE_ONLY.match(value.strip()))
        value = pd.Timestamp(value)
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day), True
    else:
        date_only = False
        value = pd.Timestamp(value)
    if value.tzinfo is not None:
        value = value.tz_convert("UTC").tz_localize(None)
    return value.to_pydatetime(), date_only


def time_range(since: Any = None, until: Any = None) -> dict[str, dt.datetime]:
    """``{"$gte": since, "$lt"/"$lte": until}`` for ``start_time``; empty if neither is given."""
    cond: dict[str, dt.datetime] = {}
    if since is not None:
        cond["$gte"] = to_utc_naive(since)[0]
    if until is not None:
        end, date_only = to_utc_naive(until)
        if date_only:
            cond["$lt"] = end + dt.timedelta(days=1)
        else:
            cond["$lte"] = end
    return cond


def experiment_condition(experiment: str | Iterable[str]) -> dict[str, Any]:
    """Runs of an experiment by what they are, not by their display name: Sacred's ``-n NAME`` renames a run
    (``experiment.name``) but its script stays ``experiment.mainfile`` (``distill.py``), so a renamed run is
    still found."""
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    return {"$or": [{"experiment.name": _one_or_many(experiment)},
                    {"experiment.mainfile": _one_or_many([f"{name}.py" for name in names])}]}


def build_run_query(
    experiment: str | Iterable[str] | None = "distill",
    status: str | Iterable[str] | None = None,
    since: Any = None,
    until: Any = None,
    sweep: str | None = None,
    run_ids: Iterable[int] | None = None,
    config_filters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One MongoDB filter document for the ``runs`` collection."""
    query: dict[str, Any] = {}
    if experiment is not None:
        query.update(experiment_condition(experiment))
    if status is not None:
        query["status"] = _one_or_many(status)
    started = time_range(since, until)
    if started:
        query["start_time"] = started
    if sweep is not None:
        query["meta.comment"] = {"$regex": tag_pattern("sweep", sweep)}
    if run_ids is not None:
        query["_id"] = {"$in": [int(i) for i in run_ids]}
    for name, value in (config_filters or {}).items():
        query[f"config.{config_key(name)}"] = value_condition(value)
    return query
