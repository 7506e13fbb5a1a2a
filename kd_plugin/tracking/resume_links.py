"""The two-way link between a run and the run that resumed it from a checkpoint (written by tracking, read by
the analysis).

* the resumed run's info: ``resumed_from_run`` (the id of the run that wrote the checkpoint) and
  ``resumed_from`` = ``{"path", "step", "run_id"}``, both set by the trainer when it starts from a checkpoint;
* the earlier run's info: ``resumed_by_run``, written by the resumed run's record
  (:meth:`kd_plugin.tracking.run_record.RunRecord.write_to`) once it first writes an info holding
  ``resumed_from_run``; if several runs resume the same run, the latest one is named.

Run ids are those of one database: a run resumed into another database is not linked back (a note in its
``kd_tracking.notes`` says so).
"""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection
from pymongo.errors import OperationFailure

RESUMED_FROM_RUN = "resumed_from_run"
RESUMED_FROM = "resumed_from"
RESUMED_BY_RUN = "resumed_by_run"


def link_back(runs: Collection, earlier: Any, run_id: Any, db_name: str) -> str | None:
    """Write ``info.resumed_by_run = run_id`` into run ``earlier``; a note if that could not be done for good (the
    run is not in this database, or the write was refused). Network errors propagate: the caller retries."""
    try:
        result = runs.update_one({"_id": earlier}, {"$set": {f"info.{RESUMED_BY_RUN}": run_id}})
    except OperationFailure as exc:
        return f"run {earlier} (resumed here) not linked back: {exc.details or exc}"[:300]
    if result.matched_count == 0:
        return f"run {earlier} (resumed here) is not in database {db_name!r}: not linked back"
    return None
