"""The declared loss mixture: ``total = sum_k alpha_k * L_k`` over the registered terms with nonzero weight.

The declaration (weights by term name, temperature, per-term options) is validated in full when the mixture is
built, before any model runs. Forward returns every weighted term and the total, so each can be logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kd_plugin.errors import ConfigError
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, OPTIONS_KEY, WEIGHTS_KEY, ModelDims, check_options


@dataclass(frozen=True)
class MixtureDeclaration:
    """``weights``: term name -> alpha (>= 0); ``options``: term name -> keyword options of that term.

    ``weight_keys`` maps a term to the config key its weight was declared under (``alpha_ce`` for the paper's
    terms in ``experiments/distill.py``), so every error names the key the user typed; by default a term's
    weight is ``loss_weights.<term>``.
    """

    weights: Mapping[str, float]
    temperature: float = 2.0
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    weight_keys: Mapping[str, str] = field(default_factory=dict)
    all_weights_key: str = WEIGHTS_KEY  # the key named when every weight is zero

    def weight_key(self, name: str) -> str:
        return self.weight_keys.get(name, f"{WEIGHTS_KEY}.{name}")

    def validate(self) -> None:
        """Checks that need no model: names, weights, temperature."""
        allowed = ", ".join(LOSS_TERMS.names())
        for name, weight in self.weights.items():
            if name not in LOSS_TERMS:
                raise ConfigError(self.weight_key(name), f"unknown loss term {name!r}", allowed)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
                raise ConfigError(self.weight_key(name), f"weight {weight!r} is not a finite number", ">= 0")
            if weight < 0:
                raise ConfigError(self.weight_key(name), f"negative weight {weight}", ">= 0")
        if not any(w > 0 for w in self.weights.values()):
            raise ConfigError(self.all_weights_key, "all loss weights are zero", f"at least one > 0 among {allowed}")
        for name, options in self.options.items():
            if name not in LOSS_TERMS:
                raise ConfigError(f"{OPTIONS_KEY}.{name}", f"options for unknown loss term {name!r}", allowed)
            check_options(name, dict(options))
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
            raise ConfigError("T", f"temperature {t!r} must be a positive number", "T > 0")

    @property
    def active(self) -> dict[str, float]:
        return {name: float(w) for name, w in self.weights.items() if w > 0}


class LossMixture(nn.Module):
    """The weighted sum of the active terms. Terms with weight 0 are not built and cost nothing."""

    def __init__(self, declaration: MixtureDeclaration, dims: ModelDims):
        super().__init__()
        declaration.validate()
        self.declaration = declaration
        self.weights = declaration.active
        self.terms = nn.ModuleDict({name: self._build(name, dims) for name in self.weights})

    def _build(self, name: str, dims: ModelDims):
        options = dict(self.declaration.options.get(name, {}))
        try:
            return LOSS_TERMS.get(name)(name, dims, float(self.declaration.temperature), **options)
        except ConfigError as err:
            if err.key == f"{WEIGHTS_KEY}.{name}":  # "this term cannot apply here": name the key the user set
                raise ConfigError(self.declaration.weight_key(name), err.problem, err.allowed) from None
            raise
        except (TypeError, ValueError) as err:  # e.g. layers=3 instead of a list of pairs
            raise ConfigError(f"{OPTIONS_KEY}.{name}", f"invalid options {options}: {err}",
                              f"{sorted(options)} as documented in kd_plugin/losses/") from None

    @property
    def needs(self) -> frozenset[str]:
        """Extra model outputs the active terms read ("hidden_states", "attentions")."""
        return frozenset().union(*(term.needs for term in self.terms.values()))

    def forward(self, outputs: DistillationOutputs) -> dict[str, torch.Tensor]:
        """Return ``{"loss_<term>": alpha * L, ..., "loss": total}``; each value a scalar tensor."""
        weighted = {f"loss_{name}": self.weights[name] * term(outputs) for name, term in self.terms.items()}
        weighted["loss"] = torch.stack(list(weighted.values())).sum()
        return weighted
