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

from analysis.seed_groups import describe_mixed, mixed_settings, setting_columns

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
    mixed: str = "refuse",
) -> pd.DataFrame:
    """Mean and standard deviation (over the runs of each group, ddof=1: NaN for a single run) of each metric.

    runs: a runs table (:func:`analysis.load_runs`). group_by: the column(s) that define a row, e.g.
    ``"variant"`` or ``["T", "alpha_cos"]``; runs with a missing value there are left out (with a warning).
    metrics: runs-table columns, e.g. ``"final.loss_mlm"``, ``"downstream.macro_accuracy"``.
    reference: the row the ``Δ`` columns are relative to, as ``{column: value}`` or an index label; None
    gives no ``Δ`` columns.

    mixed: a row whose runs differ in a setting other than the seed (world size, launcher, DeepSpeed file,
    ``stop_at_step``, any config value but the declared bookkeeping keys; :mod:`analysis.seed_groups`) is
    refused (``"refuse"``: a ValueError naming the row, the columns and their values), or becomes several rows
    (``"split"``: those columns are added to ``group_by``, with a warning).

    Columns: ``n_seeds`` (distinct seeds), ``n_runs``, then per metric ``<m> mean``, ``<m> std``, ``Δ <m>``.
    When a row holds more runs than seeds (a seed run twice) a warning says which; the std is then over runs.
    Rows: the reference first, the others in the order they first appear in ``runs``.

    A run with any metric NaN or infinite, or missing where other runs of its row have it (a diverged run), is
    left out of its row's means and of ``n_runs`` / ``n_seeds``, with a warning naming it (a metric no run of
    the row has, such as ``final.loss_ce`` of ``no_ce``, stays NaN); ``table.attrs["dropped_runs"]`` is ``{row label:
    [run ids]}`` of those runs.
    """
    keys, metrics = _as_list(group_by), _as_list(metrics)
    if mixed not in ("refuse", "split"):
        raise ValueError(f"mixed={mixed!r}; allowed: 'refuse', 'split'")
    missing = [c for c in keys + metrics if c not in runs.columns]
    if missing:
        raise KeyError(f"not in the runs table: {missing}; columns: {list(runs.columns)}")
    usable = runs.dropna(subset=keys)
    if len(usable) < len(runs):
        warnings.warn(f"{len(runs) - len(usable)} run(s) without a value for {keys} left out", stacklevel=2)
    keys = _seed_groups(usable, keys, metrics, seed_column, mixed)  # + the split columns (null is a value there)
    usable, dropped = _finite_runs(usable, keys, metrics)
    grouped = usable.groupby(keys if len(keys) > 1 else keys[0], sort=False, dropna=False)

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
    table.attrs["dropped_runs"] = dropped
    return table


def _seed_groups(runs: pd.DataFrame, keys: list[str], metrics: list[str], seed_column: str, mixed: str
                 ) -> list[str]:
    """``keys``, or with ``mixed="split"`` ``keys`` plus the settings that differ inside a row; refuses rows that
    mix settings otherwise, and warns when a row holds a seed more than once."""
    settings = setting_columns(runs, exclude=[*keys, *metrics, seed_column])
    differing = mixed_settings(runs[[*keys, seed_column, *settings]] if seed_column in runs.columns
                               else runs[[*keys, *settings]], keys, seed_column)
    if differing and mixed == "refuse":
        extra = sorted({column for columns in differing.values() for column in columns})
        raise ValueError(f"rows of {keys} mix runs that differ in more than the seed: {describe_mixed(differing)}; "
                         f"group by {keys + extra}, select the runs you mean, or pass mixed='split'")
    if differing:
        extra = sorted({column for columns in differing.values() for column in columns} - set(keys))
        warnings.warn(f"rows split by {extra} as well: their runs differ in them ({describe_mixed(differing)})",
                      stacklevel=3)
        keys = keys + extra
    if seed_column in runs.columns:
        counted = runs.groupby(keys if len(keys) > 1 else keys[0], sort=False, dropna=False)[seed_column]
        repeated = {label: sorted(seeds[seeds.duplicated()].unique().tolist()) for label, seeds in counted
                    if seeds.duplicated().any()}
        if repeated:
            warnings.warn("rows with a seed run more than once (their mean and std are over runs, not seeds; "
                          "analysis.ablation_report keeps the latest run per seed): "
                          + "; ".join(f"{label}: seed {seeds}" for label, seeds in repeated.items()), stacklevel=3)
    return keys


def _finite_runs(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> tuple[pd.DataFrame, dict]:
    """The runs whose every metric is a finite number (or missing in every run of the row: a term that was off),
    and ``{row label: [run ids]}`` of the others.

    A diverged run logs NaN or inf; pandas' mean would skip a NaN (while the count kept the run) and turn an inf
    into an inf mean. Such runs (and runs that lack a metric) are left out of every mean, std and count of their
    row, so ``n_runs`` is what each mean is over; a warning names them."""
    numbers = runs[metrics].apply(pd.to_numeric, errors="coerce")  # (n_runs, n_metrics)
    # a metric no run of the row has (a loss term switched off, e.g. final.loss_ce of no_ce) is no divergence
    row_has = numbers.notna().groupby([runs[k] for k in keys], sort=False, dropna=False).transform("any")
    values = numbers.to_numpy(dtype=float)
    finite = (np.isfinite(values) | ~row_has.to_numpy(dtype=bool)).all(axis=1)  # (n_runs,)
    if finite.all():
        return runs, {}
    left_out = runs[~finite]
    dropped: dict[Hashable, list] = {}
    for run_id, row in left_out[keys].iterrows():
        label = row.iloc[0] if len(keys) == 1 else tuple(row)
        dropped.setdefault(label, []).append(run_id)
    listed = "; ".join(f"{label}: {ids}" for label, ids in dropped.items())
    warnings.warn(f"{len(left_out)} run(s) with a metric of {metrics} that is missing, NaN or infinite left out of "
                  f"the means and of n_runs / n_seeds (table.attrs['dropped_runs']): {listed}", stacklevel=3)
    return runs[finite], dropped


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
