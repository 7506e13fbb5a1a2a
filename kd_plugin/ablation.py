"""The ablation variants of the DistilBERT paper (Sanh et al. 2019, Table 4), as config updates of
``experiments/distill.py``, and :func:`variant_of`, which recognises them from a run's config.

Two sets, one per training objective: the paper's for masked LMs (``full``, ``no_ce``, ``no_cos``, ``no_mlm``,
``random_init``) and DistilGPT2's for causal LMs, where ``L_clm`` replaces ``L_mlm`` (``full``, ``no_ce``,
``no_cos``, ``no_clm``, ``random_init``; run with the ``causal_lm`` named config). The analysis tells the sets
apart by the run's ``objective`` column.

One definition for both sides: ``experiments/sweep.py`` runs these updates, and the analysis (``analysis/``) names
a run's variant from what actually ran (its config), so a run started by hand with the same settings lands in
the same row. Loss weights are compared with ``numpy.isclose``; a run with other weights, an ``alpha_mse`` or
extra ``loss_weights`` is no paper variant (``variant_of`` returns None, and the runs table falls back to the
sweep's ``variant`` tag, if any).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FULL_MIXTURE = {"alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0}  # the paper's recipe (DistilBERT's training command)
CAUSAL_FULL_MIXTURE = {"alpha_ce": 5.0, "alpha_clm": 2.0, "alpha_cos": 1.0}  # DistilGPT2's (alpha_mlm=0)
RANDOM_INIT = "random_init"
LAYERS_KEY = "student.layers"
LOSS_WEIGHTS_KEY = "loss_weights"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    updates: Mapping[str, Any] = field(default_factory=dict)  # distill.py `with` updates (dotted keys)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("full", "L_ce + L_mlm + L_cos (5 / 2 / 1), student initialised from the teacher", FULL_MIXTURE),
        Variant("no_ce", "without L_ce (soft-target KL)", dict(FULL_MIXTURE, alpha_ce=0.0)),
        Variant("no_cos", "without L_cos (hidden-state cosine)", dict(FULL_MIXTURE, alpha_cos=0.0)),
        Variant("no_mlm", "without L_mlm (masked-LM)", dict(FULL_MIXTURE, alpha_mlm=0.0)),
        Variant("random_init", "random student initialisation", dict(FULL_MIXTURE, **{LAYERS_KEY: RANDOM_INIT})),
    ]
}
CAUSAL_VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("full", "L_ce + L_clm + L_cos (5 / 2 / 1), student initialised from the teacher",
                dict(CAUSAL_FULL_MIXTURE, alpha_mlm=0.0)),
        Variant("no_ce", "without L_ce (soft-target KL)", dict(CAUSAL_FULL_MIXTURE, alpha_mlm=0.0, alpha_ce=0.0)),
        Variant("no_cos", "without L_cos (hidden-state cosine)",
                dict(CAUSAL_FULL_MIXTURE, alpha_mlm=0.0, alpha_cos=0.0)),
        Variant("no_clm", "without L_clm (causal-LM)", dict(CAUSAL_FULL_MIXTURE, alpha_mlm=0.0, alpha_clm=0.0)),
        Variant("random_init", "random student initialisation",
                dict(CAUSAL_FULL_MIXTURE, alpha_mlm=0.0, **{LAYERS_KEY: RANDOM_INIT})),
    ]
}
VARIANT_SETS = {"masked_lm": VARIANTS, "causal_lm": CAUSAL_VARIANTS}  # objective -> its variants
REFERENCE_VARIANT = "full"
# The keys the variants own: a sweep must not override them for all variants at once.
VARIANT_KEYS = ("alpha_ce", "alpha_mlm", "alpha_clm", "alpha_cos", LAYERS_KEY)
WEIGHT_KEYS = VARIANT_KEYS[:4]

_MISSING = object()


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _value(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]`` for a dotted ``key``, in a flat mapping (``{"student.layers": ...}``) or a nested one."""
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _extra_loss_weights(config: Mapping[str, Any]) -> list[Any]:
    """The ``loss_weights`` values of a flat (``loss_weights.<term>``) or nested (``loss_weights: {...}``) config."""
    nested = config.get(LOSS_WEIGHTS_KEY)
    values = list(nested.values()) if isinstance(nested, Mapping) else []
    return values + [v for k, v in config.items() if str(k).startswith(f"{LOSS_WEIGHTS_KEY}.")]


def variant_of(row: Mapping[str, Any]) -> str | None:
    """The paper variant a run is, from its config: a whole run document (``{"config": {...}}``), a nested
    config, or a runs-table row (dotted keys).

    None when the config is not one of :data:`VARIANTS` or :data:`CAUSAL_VARIANTS` (other weights,
    ``alpha_mse`` != 0, extra loss terms). ``alpha_clm`` absent (runs before causal LMs existed) counts as 0.
    """
    config = row["config"] if isinstance(row.get("config"), Mapping) else row
    raw = {k: _value(config, k) for k in WEIGHT_KEYS}
    if raw["alpha_clm"] is _MISSING:
        raw["alpha_clm"] = 0.0
    alphas = [_as_float(raw[k]) for k in WEIGHT_KEYS]
    if any(a is None for a in alphas):  # missing or not a number
        return None
    alpha_mse = _value(config, "alpha_mse")
    if alpha_mse is not _MISSING and (_as_float(alpha_mse) or 0.0) != 0.0:
        return None
    if any((_as_float(v) or 0.0) != 0.0 for v in _extra_loss_weights(config)):
        return None
    random_init = _value(config, LAYERS_KEY) == RANDOM_INIT
    for variants in VARIANT_SETS.values():
        for variant in variants.values():
            wants_random = variant.updates.get(LAYERS_KEY) == RANDOM_INIT
            expected = [float(variant.updates.get(k, 0.0)) for k in WEIGHT_KEYS]
            if wants_random == random_init and np.allclose(alphas, expected):
                return variant.name
    return None
