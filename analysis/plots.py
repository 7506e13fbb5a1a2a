"""Loss curves per variant, saved as PNG: one line per group (the mean over its seeds at each step) with a ±1
standard-deviation band. Uses matplotlib's Agg canvas directly (no pyplot state, no display needed), so it works
the same in scripts, tests and notebooks.

A group's runs are averaged only when they differ in nothing but the seed (:mod:`analysis.seed_groups`): runs
that differ in another setting of the metrics table (world size, launcher, DeepSpeed file, ``stop_at_step``, ...)
are refused, or drawn as separate lines with ``mixed="split"``. The legend counts seeds, and runs when a seed
was run more than once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.seed_groups import check_seed_groups, mixed_settings, seeds_label


def _label(keys: list[str], value) -> str:
    values = value if isinstance(value, tuple) else (value,)
    if len(keys) == 1:
        return str(values[0])
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


def plot_loss_curves(
    metrics: pd.DataFrame,
    by: str | Sequence[str] = "variant",
    metric: str = "loss",
    path: str | Path = "loss_curves.png",
    title: str | None = None,
    logy: bool = False,
    dpi: int = 120,
    mixed: str = "refuse",
) -> Path:
    """Plot ``metric`` against step for each group of ``by`` (config columns of a :func:`load_metrics` table)
    and save the figure to ``path`` (parent directories are created). Returns the absolute path.

    mixed: what to do with a group whose runs differ in a setting other than the seed: ``"refuse"`` (a
    ValueError naming them) or ``"split"`` (one line per setting, the differing columns added to ``by``)."""
    if mixed not in ("refuse", "split"):
        raise ValueError(f"mixed={mixed!r}; allowed: 'refuse', 'split'")
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in keys if c not in metrics.columns]
    if missing:
        raise KeyError(f"{missing} not in the metrics table; columns: {list(metrics.columns)}")
    points = metrics[metrics["name"] == metric]
    if points.empty:
        raise ValueError(f"no points of metric {metric!r}; metrics present: {sorted(metrics['name'].unique())}")
    if mixed == "refuse":
        check_seed_groups(points, keys)
    else:
        differing = mixed_settings(points, keys)
        keys += sorted({column for columns in differing.values() for column in columns} - set(keys))

    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for value, group in points.groupby(keys if len(keys) > 1 else keys[0], sort=False, dropna=False):
        stats = group.groupby("step")["value"].agg(["mean", "std", "count"])  # over the seeds at each step
        (line,) = ax.plot(stats.index, stats["mean"], label=f"{_label(keys, value)} ({seeds_label(group)})")
        std = stats["std"].fillna(0.0)
        ax.fill_between(stats.index, stats["mean"] - std, stats["mean"] + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title or f"{metric}: mean over seeds ± 1 std")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()

    out = Path(path).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
