"""Analysis of the Sacred runs saved in MongoDB: a runs table, metric curves, ablation tables and plots.

    from analysis import load_runs, load_metrics, ablation_table, format_ablation, plot_loss_curves
    runs = load_runs(status="COMPLETED", T=2)                      # one row per run
    curves = load_metrics(runs, names="loss")                      # long form: run_id, name, step, value, ...
    curves = load_metrics([12], names="loss", follow_resumes=True) # one curve through a chain of resumed runs
    table = ablation_table(runs, "variant", ["final.loss_mlm"], reference={"variant": "full"})
    plot_loss_curves(curves, by="variant", path="outputs/analysis/loss.png")

``experiments/sweep.py`` runs the paper's ablation variants; ``analysis/ablation.ipynb`` reads them end to end.

The paper's ablation variants (``VARIANTS``, ``variant_of``) are defined in :mod:`kd_plugin.ablation`, shared
with the sweep command, and re-exported here. Names are imported on first use (PEP 562), so importing one module
does not pay for pandas and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ablation_table": "analysis.ablation",
    "format_ablation": "analysis.ablation",
    "open_database": "analysis.connection",
    "load_metrics": "analysis.curves",
    "varying_columns": "analysis.curves",
    "plot_loss_curves": "analysis.plots",
    "one_of": "analysis.query",
    "config_columns": "analysis.runs",
    "load_runs": "analysis.runs",
    "resume_chain": "analysis.resumes",
    "VARIANTS": "kd_plugin.ablation",
    "variant_of": "kd_plugin.ablation",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs
    from analysis.ablation import ablation_table, format_ablation  # noqa: F401
    from analysis.connection import open_database  # noqa: F401
    from analysis.curves import load_metrics, varying_columns  # noqa: F401
    from analysis.plots import plot_loss_curves  # noqa: F401
    from analysis.query import one_of  # noqa: F401
    from analysis.resumes import resume_chain  # noqa: F401
    from analysis.runs import config_columns, load_runs  # noqa: F401
    from kd_plugin.ablation import VARIANTS, variant_of  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
