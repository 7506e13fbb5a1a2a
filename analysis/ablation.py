"""Ablation tables in the form of the DistilBERT paper's Table 4: one row per variant, the mean ± std of each
metric over seeds, and the difference of each row's mean to a reference row (``Δ <metric>``).

    runs = load_runs(status="COMPLETED")
    table = ablation_table(runs, group_by="variant", metrics=["downstream.macro_accuracy"],
                           reference={"variant": "full"})
    format_ablation(table)          # strings "77.012 ± 0.310", "-2.960"
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

SEED_COLUMN = "seed"


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _reference_label(table: pd.DataFrame, group_by: list[str], reference: Any) -> Hashable:
    """The index label of the reference row: from ``{key: value}`` (a subset of group_by) or a label."""
    if isinstance(reference, Mapping):
        unknown = [k for k in reference if k not in group_by]
        if unknown:
            raise KeyError(f"reference keys {unknown} are not among group_by {group_by}")
        keys = table.index.to_frame(index=False)
        match = np.ones(len(table), dtype=bool)
        for key, value in reference.items():
            match &= (keys[key] == value).to_numpy()
        if match.sum() != 1:
            raise ValueError(
                f"reference {dict(reference)} matches {int(match.sum())} rows, need exactly 1; rows: {list(table.index)}"
            )
        return table.index[int(np.flatnonzero(match)[0])]
    if reference not in table.index:
        raise KeyError(f"reference row {reference!r} not in the table; rows: {list(table.index)}")
    return reference


def ablation_table(
    runs: pd.DataFrame,
    group_by: str | Sequence[str] = "variant",
    metrics: str | Sequence[str] = ("final.loss",),
    reference: Mapping[str, Any] | Hashable | None = None,
    seed_column: str = SEED_COLUMN,
) -> pd.DataFrame:
    """Mean and standard deviation (over the runs of each group, ddof=1: NaN for a single run) of each metric.

    runs: a runs table (:func:`analysis.load_runs`). group_by: the column(s) that define a row, e.g.
    ``"variant"`` or ``["T", "alpha_cos"]``; runs with a missing value there are left out (with a warning).
    metrics: runs-table columns, e.g. ``"final.loss_mlm"``, ``"downstream.macro_accuracy"``.
    reference: the row the ``Δ`` columns are relative to, as ``{column: value}`` or an index label; None
    gives no ``Δ`` columns.

    Columns: ``n_seeds`` (distinct seeds), ``n_runs``, then per metric ``<m> mean``, ``<m> std``, ``Δ <m>``.
    Rows: the reference first, the others in the order they first appear in ``runs``.
    """
    keys, metrics = _as_list(group_by), _as_list(metrics)
    missing = [c for c in keys + metrics if c not in runs.columns]
    if missing:
        raise KeyError(f"not in the runs table: {missing}; columns: {list(runs.columns)}")
    usable = runs.dropna(subset=keys)
    if len(usable) < len(runs):
        warnings.warn(f"{len(runs) - len(usable)} run(s) without a value for {keys} left out", stacklevel=2)
    grouped = usable.groupby(keys if len(keys) > 1 else keys[0], sort=False, dropna=True)

    columns: dict[str, pd.Series] = {}
    columns["n_seeds"] = grouped[seed_column].nunique() if seed_column in usable.columns else grouped.size()
    columns["n_runs"] = grouped.size()
    for metric in metrics:
        values = grouped[metric]
        columns[f"{metric} mean"] = values.mean()
        columns[f"{metric} std"] = values.std(ddof=1)
    table = pd.DataFrame(columns)

    if reference is not None and len(table):
        label = _reference_label(table, keys, reference)
        for metric in metrics:
            mean = table[f"{metric} mean"]
            table.insert(table.columns.get_loc(f"{metric} std") + 1, f"Δ {metric}", mean - mean.loc[label])
        table = pd.concat([table.loc[[label]], table.drop(index=[label])])
        table.attrs["reference"] = label
    table.attrs["metrics"] = metrics
    return table


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_ablation(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table as strings for reading or a paper: ``"<mean> ± <std>"`` (only the mean for a single run),
    signed differences ``"-2.960"``, and the seed count."""
    metrics = table.attrs.get("metrics") or [c[: -len(" mean")] for c in table.columns if c.endswith(" mean")]
    out = pd.DataFrame(index=table.index)
    out["n_seeds"] = table["n_seeds"].astype(int)
    for metric in metrics:
        mean, std = table[f"{metric} mean"], table[f"{metric} std"]
        out[metric] = [
            _fmt(m, digits) + ("" if np.isnan(m) or np.isnan(s) else f" ± {_fmt(s, digits)}")
            for m, s in zip(mean, std, strict=True)
        ]
        if f"Δ {metric}" in table.columns:
            out[f"Δ {metric}"] = [_fmt(d, digits, signed=True) for d in table[f"Δ {metric}"]]
    return out
