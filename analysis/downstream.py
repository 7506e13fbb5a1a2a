"""Downstream evaluation runs joined back to the distillation run whose student they evaluated.

An evaluation run (experiment ``finetune``) records ``config.distill_run_id`` (the ``_id`` of the distill run)
and, in its result, ``macro_accuracy`` and ``tasks.<task>.accuracy``. Per distill run, the most recent
COMPLETED evaluation run is used. Columns: ``downstream.run_id``, ``downstream.macro_accuracy`` (and the
result's other top-level scores: ``teacher_macro_accuracy``, ``retained_fraction``), ``downstream.<task>`` (the
task's test accuracy) and ``downstream.<task>.<metric>`` for its other scores (``teacher_accuracy``,
``validation_accuracy``, F1); timings, sizes and lists are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Number

import pandas as pd
from pymongo.database import Database

from analysis.query import experiment_condition

DOWNSTREAM_EXPERIMENT = "finetune"
PREFIX = "downstream."
SCORE_WORDS = ("accuracy", "f1", "retained")


def _is_score(key: str, value: object) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and any(w in key for w in SCORE_WORDS)


def _scores(result: dict) -> dict[str, float]:
    """Accuracy-like scalars of an evaluation result (timings, sizes and per-epoch lists are left out)."""
    row = {f"{PREFIX}{key}": float(value) for key, value in result.items() if _is_score(key, value)}
    for task, scores in (result.get("tasks") or {}).items():
        if isinstance(scores, Number) and not isinstance(scores, bool):
            row[f"{PREFIX}{task}"] = float(scores)
        elif isinstance(scores, dict):
            for metric, value in scores.items():
                if _is_score(metric, value):
                    name = f"{PREFIX}{task}" if metric == "accuracy" else f"{PREFIX}{task}.{metric}"
                    row[name] = float(value)
    return row


def downstream_results(
    db: Database, distill_run_ids: Iterable[int], experiment: str = DOWNSTREAM_EXPERIMENT
) -> pd.DataFrame:
    """One row per distill run that has a completed evaluation; index: the distill run id (``run_id``)."""
    ids = [int(i) for i in distill_run_ids]
    query = {
        **experiment_condition(experiment),  # a fine-tune run renamed with -n is found by its script
        "status": "COMPLETED",
        "config.distill_run_id": {"$in": ids + [str(i) for i in ids]},  # tolerate an id given as text
    }
    projection = {"_id": 1, "config.distill_run_id": 1, "result": 1, "start_time": 1}
    latest: dict[int, dict] = {}
    for doc in db.runs.find(query, projection).sort([("start_time", 1), ("_id", 1)]):
        latest[int(doc["config"]["distill_run_id"])] = doc  # later runs overwrite earlier ones
    rows = {
        run_id: {f"{PREFIX}run_id": doc["_id"], **_scores(doc.get("result") or {})} for run_id, doc in latest.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = table.index.astype("int64")
    table.index.name = "run_id"
    return table
