"""Which runs may be averaged as seeds of one setting: those that differ in nothing but the seed.

A mean "over seeds" is only that when the runs it averages share every other setting that changes what is trained
or measured. Runs of one variant can still differ in world size, launcher, DeepSpeed file, ``stop_at_step``,
``max_steps``, ...; averaging them gives a number no single setting produced. The DeepSpeed config is compared
by content (``deepspeed_settings``), not by its path, which differs between two checkouts of one project. The settings that change nothing
(where outputs go, what is shown, how fast) are declared once, with the setting (``bookkeeping=True`` in
:mod:`kd_plugin.config`), and are not compared.

    mixed = mixed_settings(runs, by=["variant"])     # {"full": {"world_size": [1, 2]}, ...}
    check_seed_groups(runs, by=["variant"])          # ValueError naming the row, the columns and their values
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pandas as pd

from kd_plugin.config import distill_bookkeeping_keys

# Columns that identify or describe a run, never a setting.
NOT_SETTINGS = frozenset({
    "run_id", "name", "step", "value", "logged_by", "experiment", "status", "died", "variant", "sweep", "comment",
    "host", "code_commit", "code_dirty", "start_time", "stop_time", "duration_s", "resumed_from_run",
    "resumed_by_run", "result",
})
DERIVED_PREFIXES = ("result.", "final.", "best.", "downstream.")


def setting_columns(table: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """The columns of ``table`` that hold a setting which changes results (config values and launch facts),
    less the declared bookkeeping keys and ``exclude``."""
    skip = set(exclude) | NOT_SETTINGS | distill_bookkeeping_keys()
    if "deepspeed_settings" in table.columns and table["deepspeed_settings"].notna().any():
        skip.add("deepspeed_config")  # the file's path: the content (deepspeed_settings) is what counts
    return [c for c in table.columns if c not in skip and not str(c).startswith(DERIVED_PREFIXES)
            and not str(c).endswith("run_id")]  # a link to another run (downstream_run_id) is no setting


def _label(value: Hashable) -> Hashable:
    return value[0] if isinstance(value, tuple) and len(value) == 1 else value


def mixed_settings(table: pd.DataFrame, by: Sequence[str], seed_column: str = "seed"
                   ) -> dict[Hashable, dict[str, list]]:
    """``{group label: {column: [the values its runs have]}}`` for each group of ``by`` whose runs differ in a
    setting other than the seed (one entry per run: a metrics table's points are reduced to their runs first)."""
    runs = table.drop_duplicates("run_id") if "run_id" in table.columns else table
    columns = setting_columns(runs, exclude=[*by, seed_column])
    mixed: dict[Hashable, dict[str, list]] = {}
    if not columns or runs.empty:
        return mixed
    for value, group in runs.groupby(list(by), sort=False, dropna=False):
        differing = {}
        for column in columns:
            values = group[column].astype(str)  # lists, dicts and NA compare as text
            if values.nunique(dropna=False) > 1:
                differing[column] = sorted({_shown(v) for v in group[column].tolist()}, key=str)
        if differing:
            mixed[_label(value)] = differing
    return mixed


def _shown(value):
    """A cell as the user set it: NaN (a key the run did not have, or null) as None, 3.0 (a column made float
    by a missing value) as 3."""
    if isinstance(value, float):
        return None if value != value else int(value) if value.is_integer() else value
    return value


def describe_mixed(mixed: dict[Hashable, dict[str, list]]) -> str:
    return "; ".join(f"{label}: " + ", ".join(f"{column} {values}" for column, values in columns.items())
                     for label, columns in mixed.items())


def check_seed_groups(table: pd.DataFrame, by: Sequence[str], seed_column: str = "seed") -> None:
    """Refuse to average runs that differ in more than the seed: one ValueError naming the groups, the columns
    and their values, and the two ways out."""
    mixed = mixed_settings(table, by, seed_column)
    if mixed:
        extra = sorted({column for columns in mixed.values() for column in columns})
        raise ValueError(
            f"runs grouped by {list(by)} differ in more than the seed, so their mean is over no single setting: "
            f"{describe_mixed(mixed)}. Group by them too ({list(by) + extra}), select the runs you mean, or pass "
            "mixed='split'")


def seeds_label(group: pd.DataFrame, seed_column: str = "seed") -> str:
    """``"3 seeds"``, or ``"2 seeds, 3 runs"`` when a seed was run twice (what an ``n`` in a legend means)."""
    runs = group.drop_duplicates("run_id") if "run_id" in group.columns else group
    n_runs = len(runs)
    if seed_column not in runs.columns:
        return f"{n_runs} run{'s' * (n_runs != 1)}"
    n_seeds = runs[seed_column].nunique()
    text = f"{n_seeds} seed{'s' * (n_seeds != 1)}"
    return text if n_seeds == n_runs else f"{text}, {n_runs} runs"
