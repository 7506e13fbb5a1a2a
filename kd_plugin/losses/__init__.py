"""The distillation loss terms and their declared mixture.

Discovery: every module of this package is imported here, so a term registered with
``@LOSS_TERMS.register("name")`` in a new file of ``kd_plugin/losses/`` is declarable without editing any other
file. A term defined elsewhere (a user's own package) is registered when that module is imported, before the
run's config is checked.
"""

import importlib
import pkgutil

from kd_plugin.losses.mixture import LossMixture, MixtureDeclaration
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm, ModelDims

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["LOSS_TERMS", "DistillationOutputs", "LossMixture", "LossTerm", "MixtureDeclaration", "ModelDims"]
