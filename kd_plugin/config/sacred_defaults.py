"""Declared defaults as a Sacred config entry: ``ex.configurations.append(DeclaredConfig(blocks))``.

It behaves like the config scope it replaces: named configs and ``with key=value`` override any key (a block
partly: ``with data.max_documents=300`` keeps the other ``data.*`` defaults), a value of another type is marked
typechanged, and ``print_config`` shows each key's one-line doc as its ``# comment``. The defaults are made at
each evaluation (a :class:`~kd_plugin.config.declarations.Computed` one read then), and may depend on the value
of one key (``per_value``: the teacher preparation's recipe per base teacher).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from sacred.config.config_dict import ConfigDict
from sacred.config.config_summary import ConfigSummary
from sacred.config.utils import dogmatize, normalize_or_die, recursive_fill_in, undogmatize
from sacred.utils import recursive_update

from kd_plugin.config.declarations import Block, flat_docs, nested_defaults


class DeclaredConfig(ConfigDict):
    """The defaults and docs of ``blocks``, evaluated against the run's fixed values as a config scope is.

    per_value: ``(key, {value: defaults})``: when the top-level ``key`` is (or defaults to) ``value``, these
    (nested) defaults replace the declared ones.
    """

    def __init__(self, blocks: Iterable[Block],
                 per_value: tuple[str, Mapping[Any, Mapping[str, Any]]] | None = None):
        self.blocks = tuple(blocks)
        self.per_value = per_value
        super().__init__(nested_defaults(self.blocks))
        self.docs = flat_docs(self.blocks)

    def defaults(self, fixed: Mapping[str, Any]) -> dict[str, Any]:
        """The declared defaults, made now, for the run's fixed values."""
        defaults = nested_defaults(self.blocks)
        if self.per_value is not None:
            key, variants = self.per_value
            value = fixed.get(key, defaults[key])
            variant = variants.get(value, {}) if isinstance(value, Hashable) else {}  # a list: refused later
            recursive_update(defaults, copy.deepcopy(dict(variant)))
        return defaults

    def __call__(self, fixed=None, preset=None, fallback=None) -> ConfigSummary:
        result = dogmatize(fixed or {})
        for key, value in self.defaults(fixed or {}).items():  # assignment, as in a scope: fixed values win,
            result[key] = value  # type changes are noted
        summary = ConfigSummary(result.revelation(), result.modified, result.typechanges, docs=self.docs)
        recursive_fill_in(result, preset or {})  # after revelation: what earlier entries set is not "added" here
        summary.update({key: normalize_or_die(value) for key, value in undogmatize(result).items()})
        return summary
