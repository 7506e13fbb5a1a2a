"""Runs that died without a word: ``kill -9``, the out-of-memory killer, a lost machine, a launcher run whose
rank 0 is gone.

Sacred records Ctrl-C / SIGTERM as INTERRUPTED and an exception as FAILED, but a process killed outright writes
nothing more: its record says RUNNING forever, and its ``heartbeat`` (written every ``-b`` seconds, 10 by
default) stops. **The rule** (:func:`looks_dead`): a RUNNING run is dead when its last sign of life, the
``heartbeat`` (else its ``start_time``), is older than

    ``$KD_DEAD_AFTER_S`` seconds if set, else max(60 s, 3 x the run's heartbeat interval)

The interval is the run's own ``-b SECONDS`` (Sacred keeps it in ``meta.options["--beat-interval"]``), else
Sacred's default 10 s: a run with default heartbeats is dead after 60 s without one, a run with ``-b 60``
after 180 s. Times are UTC, as Sacred writes them, compared with the clock of the process that checks.

**Who writes it:** tracking only. Every run recorded by the ResilientMongoObserver, once it reaches its database,
marks that database's dead runs (:func:`mark_dead_runs`, in a background thread, never failing the new run):
``status`` = ``FAILED`` (one of Sacred's own statuses, so Omniboard and every Sacred tool can filter and colour
it), ``fail_trace`` = one line saying the process stopped without a word, since when and on which host,
``stop_time`` = the last sign of life, ``kd_tracking.died`` = True, ``kd_tracking.marked_dead_at`` = now,
``kd_tracking.dead_after_s`` = the threshold applied. The analysis (``analysis.load_runs``) only reads: it
applies the same rule and shows such runs as FAILED with ``died`` = True before any later run has written it.

A run marked by mistake (alive, but cut off from the database for longer than the threshold) repairs itself:
its next write sets its whole document again, status RUNNING included.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from typing import Any

from pymongo.database import Database

STATUS_DIED = "DIED"  # what the analysis accepts as a status filter for the runs that died (shown FAILED)
STATUS_MARKED = "FAILED"  # what a dead run is recorded as: Sacred's status for a run that did not complete
ENV_DEAD_AFTER = "KD_DEAD_AFTER_S"  # overrides the rule's threshold (seconds), e.g. 3 in tests
MIN_DEAD_AFTER_S = 60.0
MISSED_HEARTBEATS = 3
SACRED_BEAT_INTERVAL_S = 10.0  # Sacred's default heartbeat interval (its -b option)
BEAT_INTERVAL_OPTION = "--beat-interval"

# The fields the rule reads (a projection for the ``runs`` collection).
RULE_FIELDS = {"status": 1, "heartbeat": 1, "start_time": 1, f"meta.options.{BEAT_INTERVAL_OPTION}": 1,
               "host.hostname": 1}


def death_notice(run: dict[str, Any]) -> str:
    """The ``fail_trace`` line of a run that died without a word."""
    last = last_sign_of_life(run)
    host = (run.get("host") or {}).get("hostname") or "an unknown host"
    return (f"kd_plugin: the process stopped without a word on {host}: no heartbeat since "
            f"{last:%Y-%m-%d %H:%M:%S} UTC (killed by kill -9 or the out-of-memory killer, or its machine was lost); "
            "resume from its last checkpoint")


def utc_now() -> dt.datetime:
    """Now, as Sacred stores times: naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def naive_utc(value: Any) -> dt.datetime | None:
    """A stored time as Sacred writes it (naive UTC), also when read by a ``tz_aware=True`` client; None if absent."""
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def env_dead_after() -> float | None:
    """``$KD_DEAD_AFTER_S`` as seconds, None if unset or empty."""
    value = os.environ.get(ENV_DEAD_AFTER)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{ENV_DEAD_AFTER}={value!r}: expected a number of seconds") from None


def beat_interval_s(run: dict[str, Any]) -> float:
    """The run's heartbeat interval: its ``-b SECONDS`` option, else Sacred's 10 s."""
    options = (run.get("meta") or {}).get("options") or {}
    try:
        value = float(options.get(BEAT_INTERVAL_OPTION) or SACRED_BEAT_INTERVAL_S)
    except (TypeError, ValueError):
        value = SACRED_BEAT_INTERVAL_S
    return value if value > 0 else SACRED_BEAT_INTERVAL_S


def dead_after_s(run: dict[str, Any]) -> float:
    """Seconds without a heartbeat after which ``run`` is dead (the module's rule)."""
    override = env_dead_after()
    if override is not None:
        return override
    return max(MIN_DEAD_AFTER_S, MISSED_HEARTBEATS * beat_interval_s(run))


def last_sign_of_life(run: dict[str, Any]) -> dt.datetime | None:
    """The run's last heartbeat, else its start time (naive UTC)."""
    return naive_utc(run.get("heartbeat")) or naive_utc(run.get("start_time"))


def looks_dead(run: dict[str, Any], now: dt.datetime | None = None) -> bool:
    """True for a RUNNING run silent for longer than :func:`dead_after_s` (needs :data:`RULE_FIELDS`)."""
    if run.get("status") != "RUNNING":
        return False
    last = last_sign_of_life(run)
    if last is None:
        return False
    return ((now or utc_now()) - last).total_seconds() > dead_after_s(run)


def candidates_query(now: dt.datetime) -> dict[str, Any]:
    """RUNNING runs silent for longer than the smallest threshold any run can have (then checked one by one)."""
    override = env_dead_after()
    cutoff = now - dt.timedelta(seconds=override if override is not None else MIN_DEAD_AFTER_S)
    return {
        "status": "RUNNING",
        "$or": [{"heartbeat": {"$lt": cutoff}}, {"heartbeat": None, "start_time": {"$lt": cutoff}}],
    }


def mark_dead_runs(db: Database, now: dt.datetime | None = None, exclude: Iterable[Any] = ()) -> list[Any]:
    """Mark the dead runs of ``db`` FAILED, as died (see the module docstring); returns their ids.

    Each update is conditional on the heartbeat the rule saw, so a run that beats in between stays RUNNING.
    """
    now = now or utc_now()
    skip = {run_id for run_id in exclude if run_id is not None}
    marked = []
    for run in db.runs.find(candidates_query(now), RULE_FIELDS):
        if run["_id"] in skip or not looks_dead(run, now):
            continue
        result = db.runs.update_one(
            {"_id": run["_id"], "status": "RUNNING", "heartbeat": run.get("heartbeat")},
            {"$set": {
                "status": STATUS_MARKED,
                "fail_trace": [death_notice(run)],
                "stop_time": last_sign_of_life(run),
                "kd_tracking.died": True,
                "kd_tracking.marked_dead_at": now,
                "kd_tracking.dead_after_s": dead_after_s(run),
            }},
        )
        if result.modified_count:
            marked.append(run["_id"])
    return marked
