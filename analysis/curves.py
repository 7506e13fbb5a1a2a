"""Metric curves as a long-form DataFrame: one row per logged point, with the config columns that tell the
runs apart, ready for ``groupby``/``seaborn``/:func:`analysis.plots.plot_loss_curves`.

    runs = load_runs(status="COMPLETED")
    curves = load_metrics(runs, names=["loss", "loss_mlm"])   # run_id, name, step, value, variant, seed, ...
    curves = load_metrics([12], "loss", follow_resumes=True)  # run 12's curve through the runs it resumed
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
from pymongo.database import Database

from analysis.connection import open_database
from analysis.logged_metrics import fetch_long
from analysis.resumes import chain_links, stitch
from analysis.runs import load_runs
from analysis.seed_groups import setting_columns

DEFAULT_COLUMNS = ("variant", "seed")


def varying_columns(runs: pd.DataFrame) -> list[str]:
    """``variant`` and ``seed``, plus every setting that differs between the runs: config values (less the
    declared bookkeeping keys, such as ``output_dir``) and launch facts (``world_size``, ``launcher``)."""
    columns = [c for c in DEFAULT_COLUMNS if c in runs.columns]
    for column in setting_columns(runs):
        if column not in columns and runs[column].astype(str).nunique(dropna=False) > 1:
            columns.append(column)
    return columns


def load_metrics(
    runs: pd.DataFrame | Iterable[int] | int,
    names: str | Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    *,
    url: str | None = None,
    db: str | Database | None = None,
    follow_resumes: bool = False,
) -> pd.DataFrame:
    """Long-form metric points: ``run_id, name, step, value`` plus config columns.

    runs: a runs table from :func:`analysis.load_runs` (its index is used), or run ids.
    names: a metric name or several (None: all). The filter runs in the database.
    columns: runs-table columns to attach; default :func:`varying_columns` (variant, seed, and the settings
    that differ between the runs), so :func:`analysis.plot_loss_curves` can tell which runs are seeds of one
    setting.
    follow_resumes: each run's curve continues the runs it was resumed from (:mod:`analysis.resumes`): their
    points up to each resume step, then its own, every step once, under the run's id; a ``logged_by`` column
    says which run logged each point. (For chain ends only, pass ``runs[runs.resumed_by_run.isna()]``.)
    """
    database = open_database(url, db)
    if isinstance(runs, pd.DataFrame):
        table = runs
    else:
        ids = [int(runs)] if isinstance(runs, int) else [int(i) for i in runs]
        table = load_runs(db=database, experiment=None, run_ids=ids, metrics=False, downstream=False)
    if isinstance(names, str):
        names = [names]
    if follow_resumes:
        chains = {int(run_id): chain_links(database, int(run_id)) for run_id in table.index}
        logged = {link.run_id for links in chains.values() for link in links}
        long = stitch(fetch_long(database, sorted(logged), names), chains)
    else:
        long = fetch_long(database, table.index, names)
    attach = list(columns) if columns is not None else varying_columns(table)
    missing = [c for c in attach if c not in table.columns]
    if missing:
        raise KeyError(f"columns not in the runs table: {missing}")
    if attach:
        long = long.join(table[attach], on="run_id")
    return long
