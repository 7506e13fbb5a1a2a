"""Resume chains: a run started from another run's checkpoint continues that run's curve.

When the trainer starts from a checkpoint it stores, in the new run's info, ``resumed_from_run`` (the id of the
run that wrote the checkpoint) and ``resumed_from`` = ``{"path", "step", "run_id"}``; the earlier run's document
then gets ``info.resumed_by_run`` (written by tracking, :mod:`kd_plugin.tracking.run_record`). The earlier run
logged steps up to its end (n >= k, k = ``resumed_from.step``); the resumed run logs steps k+1 on.

    resume_chain(12)                                   # [7, 9, 12]: run 12 resumed 9, which resumed 7
    load_metrics([12], "loss", follow_resumes=True)    # one curve: 7's steps <= k9, 9's up to k12, then 12's

Stitching rule, for run R resumed at step k from run P: ``curve(R) = curve(P)[step <= k] + R[step > k]``, applied
back along the chain, so every step appears once (the steps P logged after its checkpoint were run again by R).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from pymongo.database import Database

from analysis.connection import open_database
from kd_plugin.tracking.resume_links import RESUMED_FROM, RESUMED_FROM_RUN

LOGGED_BY = "logged_by"  # column of a stitched curve: the run that logged the point


@dataclass(frozen=True)
class ChainLink:
    """One run's part of a stitched curve: its points with ``after_step < step <= up_to_step``."""

    run_id: int
    after_step: float  # -inf for the first run of the chain
    up_to_step: float  # inf for the last run


def _resume_point(db: Database, run_id: int) -> tuple[int | None, float]:
    """(the run this one resumed, the checkpoint step), or (None, -inf) if it did not resume one."""
    doc = db.runs.find_one({"_id": run_id}, {f"info.{RESUMED_FROM_RUN}": 1, f"info.{RESUMED_FROM}.step": 1})
    info = (doc or {}).get("info") or {}
    earlier, step = info.get(RESUMED_FROM_RUN), (info.get(RESUMED_FROM) or {}).get("step")
    if earlier is None or step is None:
        return None, -math.inf
    return int(earlier), float(step)


def chain_links(db: Database, run_id: int) -> list[ChainLink]:
    """The parts of ``run_id``'s stitched curve, first run first. A run missing from the database ends the chain
    (the later runs' own points are still used)."""
    links: list[ChainLink] = []
    seen: set[int] = set()
    current: int | None = int(run_id)
    up_to = math.inf
    while current is not None and current not in seen:
        seen.add(current)
        earlier, step = _resume_point(db, current)
        links.append(ChainLink(current, step, up_to))
        up_to = min(up_to, step)
        if earlier is not None and db.runs.find_one({"_id": earlier}, {"_id": 1}) is None:
            earlier = None
        current = earlier
    return links[::-1]


def resume_chain(run_id: int, url: str | None = None, db: str | Database | None = None) -> list[int]:
    """The ids of the runs whose points make ``run_id``'s stitched curve, first run first (``[run_id]`` for a
    run that did not resume another)."""
    return [link.run_id for link in chain_links(open_database(url, db), run_id)]


def stitch(long: pd.DataFrame, chains: dict[int, list[ChainLink]]) -> pd.DataFrame:
    """Long-form points of every run of the chains -> one stitched curve per chain, under the chain's last run id,
    with a ``logged_by`` column."""
    parts = []
    for run_id, links in chains.items():
        for link in links:
            rows = long[(long["run_id"] == link.run_id) & (long["step"] > link.after_step)
                        & (long["step"] <= link.up_to_step)]
            parts.append(rows.assign(run_id=run_id, **{LOGGED_BY: link.run_id}))
    if not parts:
        return long.iloc[:0].assign(**{LOGGED_BY: pd.Series(dtype="int64")})
    stitched = pd.concat(parts, ignore_index=True)
    stitched[LOGGED_BY] = stitched[LOGGED_BY].astype("int64")
    return stitched.sort_values(["run_id", "name", "step"], kind="stable").reset_index(drop=True)
