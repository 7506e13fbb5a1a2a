"""Model families: one adapter module per architecture, registered on import (see :mod:`.family`)."""

import importlib
import pkgutil

from kd_plugin.families.family import FAMILIES, ModelFamily, family_of, n_layers_of, supported

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "family":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FAMILIES", "ModelFamily", "family_of", "n_layers_of", "supported"]
