"""Declared defaults as a Sacred config entry: ``ex.configurations.append(DeclaredConfig(blocks))``.

It behaves like the config scope it replaces: named configs and ``with key=value`` override any key (a block
partly: ``with data.max_documents=300`` keeps the other ``data.*`` defaults), a value of another type is marked
typechanged, and ``print_config`` shows each key's one-line doc as its ``# comment``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from sacred.config.config_dict import ConfigDict
from sacred.config.config_summary import ConfigSummary
from sacred.config.utils import dogmatize, normalize_or_die, recursive_fill_in, undogmatize

from kd_plugin.config.declarations import Block, flat_docs, nested_defaults


class DeclaredConfig(ConfigDict):
    """The defaults and docs of ``blocks``, evaluated against the run's fixed values as a config scope is."""

    def __init__(self, blocks: Iterable[Block]):
        blocks = tuple(blocks)
        super().__init__(nested_defaults(blocks))
        self.docs = flat_docs(blocks)

    def __call__(self, fixed=None, preset=None, fallback=None) -> ConfigSummary:
        result = dogmatize(fixed or {})
        for key, value in self._conf.items():  # assignment, as in a scope: fixed values win, type changes are noted
            result[key] = copy.deepcopy(value)
        summary = ConfigSummary(result.revelation(), result.modified, result.typechanges, docs=self.docs)
        recursive_fill_in(result, preset or {})  # after revelation: what earlier entries set is not "added" here
        summary.update({key: normalize_or_die(value) for key, value in undogmatize(result).items()})
        return summary
