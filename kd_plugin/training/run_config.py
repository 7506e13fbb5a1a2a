"""Checks of the experiment config that need no model, run before anything is loaded or computed.

Every failure is a ``ConfigError`` naming the config key and the allowed values. The Sacred experiment calls
``validate_distill_config`` first thing; checks that need the models (layer indices against the teacher's
depth, ``cos`` between different widths) run right after the teacher config is read, still before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from kd_plugin.errors import ConfigError
from kd_plugin.losses import LOSS_TERMS, MixtureDeclaration
from kd_plugin.losses.term import default_options
from kd_plugin.masking import MaskingConfig
from kd_plugin.training.checkpointing import find_checkpoint_dir
from kd_plugin.training.ds_config import check_ds_json, load_ds_json, plan_batches

ALPHA_KEYS = {"alpha_ce": "ce", "alpha_mlm": "mlm", "alpha_cos": "cos", "alpha_mse": "mse"}


def mixture_declaration(cfg: Mapping[str, Any]) -> MixtureDeclaration:
    """alpha_* (the paper's names) plus ``loss_weights`` for the registry's other terms."""
    weights = {term: cfg[key] for key, term in ALPHA_KEYS.items()}
    for name, weight in dict(cfg.get("loss_weights") or {}).items():
        if name in weights:
            raise ConfigError(f"loss_weights.{name}", f"'{name}' is already set by alpha_{name}",
                              "terms other than ce, mlm, cos, mse")
        weights[name] = weight
    options = {name: dict(opts) for name, opts in dict(cfg.get("loss_options") or {}).items()}
    return MixtureDeclaration(weights=weights, temperature=cfg["T"], options=options)


def declarable_loss_config() -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Defaults for the experiment config: every registered term's weight (0 = off) and options, so
    ``with loss_weights.hidden_mse=1 loss_options.ce.rows=masked`` works and ``print_config`` lists them."""
    weights = {name: 0.0 for name in LOSS_TERMS.names() if name not in ALPHA_KEYS.values()}
    options = {name: default_options(LOSS_TERMS.get(name)) for name in LOSS_TERMS.names()}
    return weights, {name: opts for name, opts in options.items() if opts}


def _positive_int(value: Any, key: str, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(key, f"{value!r} is not an integer >= {minimum}", f">= {minimum}" + (" or null" if allow_none else ""))


def _in_range(value: Any, key: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(key, f"{value!r} is out of range", f"{lo}{low}, {high}{hi}")


def user_key(key: str) -> str:
    """The mixture reports ``loss.weights.<term>``; users set ``alpha_<term>`` or ``loss_weights.<term>``."""
    if key.startswith("loss.weights."):
        term = key[len("loss.weights."):]
        alpha = {v: k for k, v in ALPHA_KEYS.items()}.get(term)
        return alpha or f"loss_weights.{term}"
    return "alpha_* / loss_weights" if key == "loss.weights" else key


def validate_mixture(cfg: Mapping[str, Any], validate: Callable[[MixtureDeclaration], Any]) -> None:
    try:
        validate(mixture_declaration(cfg))
    except ConfigError as err:
        raise ConfigError(user_key(err.key), err.problem, err.allowed) from None


def check_adamw_settings(optim: Mapping[str, Any], clipping_may_be_zero: bool) -> None:
    """The ``optim.*`` block shared by distillation and teacher preparation (AdamW + linear schedule)."""
    betas = optim["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2):
        raise ConfigError("optim.betas", f"{betas!r} is not a pair", "[beta1, beta2], each in [0, 1)")
    for i, beta in enumerate(betas):
        _in_range(beta, f"optim.betas[{i}]", 0.0, 1.0, high_open=True)
    _in_range(optim["eps"], "optim.eps", 0.0, 1.0, low_open=True)
    _in_range(optim["weight_decay"], "optim.weight_decay", 0.0, 1.0)
    _in_range(optim["warmup_proportion"], "optim.warmup_proportion", 0.0, 1.0, high_open=True)
    _in_range(optim["max_grad_norm"], "optim.max_grad_norm", 0.0, math.inf,
              low_open=not clipping_may_be_zero, high_open=True)


def validate_distill_config(cfg: Mapping[str, Any], world_size: int = 1) -> None:
    validate_mixture(cfg, MixtureDeclaration.validate)
    unknown = sorted(set(cfg["masking"]) - {f.name for f in fields(MaskingConfig)})
    if unknown:
        raise ConfigError(f"masking.{unknown[0]}", "unknown key", ", ".join(f.name for f in fields(MaskingConfig)))
    MaskingConfig(**cfg["masking"]).validate()

    data = cfg["data"]
    _positive_int(data["max_seq_length"], "data.max_seq_length", minimum=8)
    if data["max_seq_length"] > 512:
        raise ConfigError("data.max_seq_length", f"{data['max_seq_length']} exceeds BERT's 512 positions", "8..512")
    _in_range(data["held_out_fraction"], "data.held_out_fraction", 0.0, 1.0, high_open=True)
    _positive_int(data.get("max_documents"), "data.max_documents", allow_none=True)

    batch = cfg["batch"]
    plan_batches(batch["micro_batch_size"], batch["gradient_accumulation_steps"], batch["effective_batch_size"], world_size)

    _in_range(cfg["optim"]["lr"], "optim.lr", 0.0, 1.0, low_open=True)
    check_adamw_settings(cfg["optim"], clipping_may_be_zero=True)

    if (cfg["max_steps"] is None) == (cfg["epochs"] is None):
        raise ConfigError("max_steps", "set exactly one of max_steps and epochs (the other null)",
                          "max_steps >= 1 with epochs=null, or epochs > 0 with max_steps=null")
    _positive_int(cfg["max_steps"], "max_steps", allow_none=True)
    if cfg["epochs"] is not None:
        _in_range(cfg["epochs"], "epochs", 0.0, 1000.0, low_open=True)
    _positive_int(cfg["log_every"], "log_every")
    _positive_int(cfg["checkpoint_every"], "checkpoint_every", allow_none=True)
    _positive_int(cfg["seed"], "seed", minimum=0)
    _positive_int(cfg.get("stop_at_step"), "stop_at_step", allow_none=True)
    _positive_int(cfg.get("eval_max_sequences"), "eval_max_sequences", allow_none=True, minimum=0)
    check_ds_json(load_ds_json(cfg["deepspeed_config"]))
    if cfg.get("resume") is not None:
        find_checkpoint_dir(cfg["resume"])
