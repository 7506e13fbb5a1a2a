"""The metrics the runs logged, read back: Sacred's ``metrics`` collection (one document per run and metric
name, with ``steps`` and ``values`` arrays) -> long-form rows, and per-run summaries (final and best value).

(Writing a series, with its cap on the number of points, is :mod:`kd_plugin.tracking.metric_series`.)"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from pymongo.database import Database

LONG_COLUMNS = ["run_id", "name", "step", "value"]


def metric_goal(name: str) -> str | None:
    """``"min"`` for losses (and perplexity, error), ``"max"`` for accuracy, F1 and throughput, else None
    (a "best" learning rate or gradient norm means nothing, so those get no ``best.`` column)."""
    n = name.lower()
    if "loss" in n or "perplexity" in n or n.endswith("error"):
        return "min"
    if "acc" in n or "f1" in n or "tokens_per_second" in n or "throughput" in n:
        return "max"
    return None


def fetch_long(db: Database, run_ids: Iterable[int], names: Iterable[str] | None = None) -> pd.DataFrame:
    """Every logged point of the given runs' metrics: columns run_id, name, step, value (sorted)."""
    query: dict = {"run_id": {"$in": [int(i) for i in run_ids]}}
    if names is not None:
        query["name"] = {"$in": list(names)}
    frames = []
    for doc in db.metrics.find(query, {"run_id": 1, "name": 1, "steps": 1, "values": 1, "_id": 0}):
        steps, values = doc.get("steps") or [], doc.get("values") or []
        n = min(len(steps), len(values))
        frames.append(
            pd.DataFrame(
                {
                    "run_id": np.full(n, int(doc["run_id"]), dtype=np.int64),
                    "name": doc["name"],
                    "step": np.asarray(steps[:n], dtype=np.int64),
                    "value": np.asarray([np.nan if v is None else v for v in values[:n]], dtype=float),
                }
            )
        )
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(LONG_COLUMNS, ["int64", "object", "int64", "float64"], strict=True)})
    long = pd.concat(frames, ignore_index=True)
    return long.sort_values(["run_id", "name", "step"], kind="stable").reset_index(drop=True)


def summarise(long: pd.DataFrame) -> pd.DataFrame:
    """Per run: ``final.<name>`` (the value at the last logged step) and ``best.<name>`` (min for losses, max
    for accuracies; see :func:`metric_goal`). Index: run_id."""
    if long.empty:
        return pd.DataFrame(index=pd.Index([], name="run_id", dtype="int64"))
    grouped = long.groupby(["run_id", "name"], sort=True)["value"]
    # Rows are sorted by step within each series: the last row is the final step (even if its value is NaN).
    final = long.drop_duplicates(["run_id", "name"], keep="last").pivot(index="run_id", columns="name", values="value")
    columns = {f"final.{name}": final[name] for name in final.columns}
    for goal, reduce in (("min", grouped.min()), ("max", grouped.max())):
        wide = reduce.unstack("name")
        for name in wide.columns:
            if metric_goal(name) == goal:
                columns[f"best.{name}"] = wide[name]
    table = pd.DataFrame(columns)
    table.index.name = "run_id"
    return table
