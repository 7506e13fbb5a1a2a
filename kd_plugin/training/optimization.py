"""Optimizer parameter groups and the learning-rate schedule of the public DistilBERT recipe.

The schedule is ``transformers.get_linear_schedule_with_warmup`` (what ``distiller.py`` uses): linear warm-up
from 0 over ``ceil(warmup_proportion * total_steps)`` steps, then linear decay to 0 at ``total_steps``.
DeepSpeed's own WarmupDecayLR starts one step late and forces at least two warm-up steps, so the schedule is
handed to ``deepspeed.initialize(lr_scheduler=...)`` instead (the engine steps and checkpoints it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only, not on biases and LayerNorm weights (as distiller.py does)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(key in name for key in NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_steps(total_steps: int, warmup_proportion: float) -> int:
    return math.ceil(warmup_proportion * total_steps)


def linear_warmup_decay(total_steps: int, warmup_proportion: float) -> Callable[[torch.optim.Optimizer], object]:
    def build(optimizer: torch.optim.Optimizer):
        return get_linear_schedule_with_warmup(optimizer, warmup_steps(total_steps, warmup_proportion), total_steps)

    return build
