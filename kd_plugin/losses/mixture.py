"""The declared loss mixture: ``total = sum_k alpha_k * L_k`` over the registered terms with nonzero weight.

The declaration (weights by term name, temperature, per-term options) is validated in full when the mixture is
built, before any model runs. Forward returns every weighted term and the total, so each can be logged.

With ``fuse_logit_rows`` the terms that average over every real token's logits (``ce``, ``mse`` over tokens,
``clm``) are computed in one shared pass (:mod:`kd_plugin.losses.fused_logit_rows`); the others, and all terms
when it is off, run their own ``forward`` (the reference path). Both give the same values to fp32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kd_plugin.errors import ConfigError
from kd_plugin.losses.fused_logit_rows import RowPart, fused_row_losses
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, OPTIONS_KEY, WEIGHTS_KEY, ModelDims, check_options

# Ranges that keep every term representable and the sum meaningful in fp32 (and in bf16/fp16 runs, whose
# logit losses are computed in fp32 chunks):
# * T scales the logits by 1/T and the KL by T^2, and the KL's gradient is T * (p_s - p_t). Below 0.1 the
#   factor T^2 turns the term down by more than 100x (T = 1e-30: T^2 underflows to 0 and the term silently
#   vanishes). Above 100, p_s - p_t is a difference of two nearly equal probabilities whose fp32 rounding error
#   grows as 6e-8 * T / |z_s - z_t|: 6e-6 at T = 100, the whole gradient near T = 1e7, exactly 0 at T = 1e30.
#   Published recipes use 1 to 20 (DistilBERT 2, TinyBERT 1, Hinton et al. up to 20).
# * A weight is 0 (the term is off and not built) or in [1e-3, 1e3]: two active terms then differ in weight by
#   at most 1e6, which fp32 (relative resolution 6e-8) still resolves in their sum and summed gradients, where a
#   1e-30 term would vanish from the total unseen while logged as active and a 1e30 one would overflow fp32 (max
#   3.4e38) for any loss above 3.4e8, or fp16's 65504 under loss scaling. Published weights lie in 0.1 to 1000
#   (DistilBERT 5/2/1, Patient-KD's beta up to 1000).
T_RANGE = (0.1, 100.0)
WEIGHT_RANGE = (1e-3, 1e3)
T_ALLOWED = f"T > 0 within [{T_RANGE[0]:g}, {T_RANGE[1]:g}]"
WEIGHT_ALLOWED = f"0 (off), or a number >= {WEIGHT_RANGE[0]:g} and <= {WEIGHT_RANGE[1]:g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_temperature(value: Any, key: str = "T") -> float:
    """The soft targets' temperature, in :data:`T_RANGE` (why: the comment above)."""
    if not _is_number(value) or not T_RANGE[0] <= value <= T_RANGE[1]:
        raise ConfigError(key, f"temperature {value!r} is out of range (below {T_RANGE[0]:g} T^2 scales the soft-target "
                          f"term toward 0, above {T_RANGE[1]:g} its gradient is lost to fp32 rounding)", T_ALLOWED)
    return float(value)


def check_weight(value: Any, key: str) -> float:
    """A loss term's weight: 0 (off) or in :data:`WEIGHT_RANGE` (why: the comment above)."""
    if not _is_number(value):
        raise ConfigError(key, f"weight {value!r} is not a finite number", WEIGHT_ALLOWED)
    if value < 0:
        raise ConfigError(key, f"negative weight {value}", WEIGHT_ALLOWED)
    if 0 < value < WEIGHT_RANGE[0]:
        raise ConfigError(key, f"weight {value!r} is too small: the term would vanish from the sum in fp32 rounding "
                          "while logged as active", WEIGHT_ALLOWED)
    if value > WEIGHT_RANGE[1]:
        raise ConfigError(key, f"weight {value!r} is too large: the weighted term can overflow the sum",
                          WEIGHT_ALLOWED)
    return float(value)


@dataclass(frozen=True)
class MixtureDeclaration:
    """``weights``: term name -> alpha (0, or in :data:`WEIGHT_RANGE`); ``temperature`` in :data:`T_RANGE`; ``options``: term name -> keyword options of that term.

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
            check_weight(weight, self.weight_key(name))
        if not any(w > 0 for w in self.weights.values()):
            raise ConfigError(self.all_weights_key, "all loss weights are zero", f"at least one > 0 among {allowed}")
        for name, options in self.options.items():
            if name not in LOSS_TERMS:
                raise ConfigError(f"{OPTIONS_KEY}.{name}", f"options for unknown loss term {name!r}", allowed)
            check_options(name, dict(options))
        check_temperature(self.temperature, "T")

    @property
    def active(self) -> dict[str, float]:
        return {name: float(w) for name, w in self.weights.items() if w > 0}


class LossMixture(nn.Module):
    """The weighted sum of the active terms. Terms with weight 0 are not built and cost nothing."""

    def __init__(self, declaration: MixtureDeclaration, dims: ModelDims, fuse_logit_rows: bool = False):
        super().__init__()
        declaration.validate()
        self.declaration = declaration
        self.weights = declaration.active
        self.terms = nn.ModuleDict({name: self._build(name, dims) for name in self.weights})
        self.fuse_logit_rows = fuse_logit_rows

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

    def _row_parts(self, outputs: DistillationOutputs) -> dict[str, RowPart]:
        """The terms that go through the shared pass over all token rows for this batch (none when it is off)."""
        if not self.fuse_logit_rows or outputs.student_logits.dtype == torch.float16:
            return {}  # fp16: see fused_logit_rows' docstring
        if 2 * outputs.token_row_index.shape[0] < outputs.attention_mask.numel():
            return {}  # mostly padding: the pass would spend more on pad rows than the row copies cost
        parts = {name: term.row_part(outputs) for name, term in self.terms.items()}
        return {name: part for name, part in parts.items() if part is not None}

    def forward(self, outputs: DistillationOutputs) -> dict[str, torch.Tensor]:
        """Return ``{"loss_<term>": alpha * L, ..., "loss": total}``; each value a scalar tensor.

        Only ``loss`` carries the gradient of the terms computed in the shared pass (their entries are detached).
        """
        parts = self._row_parts(outputs)
        summands, shared = [], {}
        if parts:
            total, values = fused_row_losses(
                outputs.student_logits, [(self.weights[name], part) for name, part in parts.items()],
                outputs.logit_chunk_rows)  # (), (n_parts,)
            summands.append(total)
            shared = dict(zip(parts, values, strict=True))
        weighted = {}
        for name, term in self.terms.items():
            if name in shared:
                weighted[f"loss_{name}"] = self.weights[name] * shared[name]
            else:
                weighted[f"loss_{name}"] = self.weights[name] * term(outputs)
                summands.append(weighted[f"loss_{name}"])
        weighted["loss"] = torch.stack(summands).sum()
        return weighted
