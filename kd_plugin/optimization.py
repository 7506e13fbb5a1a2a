"""AdamW parameter groups and the learning-rate schedule of the public DistilBERT recipe, shared by the
distillation engine, the teacher's masked-LM preparation and downstream fine-tuning.

The schedule is ``transformers.get_linear_schedule_with_warmup`` (what ``distiller.py`` uses): linear warm-up
from 0 over ``ceil(warmup_proportion * total_steps)`` steps, then linear decay to 0 at ``total_steps``.
DeepSpeed's own WarmupDecayLR starts one step late and forces at least two warm-up steps, so the schedule is
handed to ``deepspeed.initialize(lr_scheduler=...)`` instead (the engine steps and checkpoints it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

# Parameter-name endings spared weight decay, per rule (kd_plugin.config.optim.NO_DECAY_RULES):
# "layer_norms": biases and every layer-norm weight, whatever the architecture calls it (BERT's LayerNorm,
# DistilBERT's sa_layer_norm / output_layer_norm / vocab_layer_norm, RoBERTa's layer_norm);
# "original": the public distiller.py's list, which a DistilBERT student matches only at embeddings.LayerNorm.
NO_DECAY = {
    "layer_norms": ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight"),
    "original": ("bias", "LayerNorm.weight"),
}


def decays(name: str, rule: str = "layer_norms") -> bool:
    """Whether the parameter called ``name`` gets weight decay under ``rule`` (substring match, as distiller.py)."""
    return not any(key in name for key in NO_DECAY[rule])


def parameter_groups(named_parameters: Iterable[tuple[str, nn.Parameter]] | nn.Module, weight_decay: float,
                     rule: str = "layer_norms") -> list[dict]:
    """Two AdamW groups: decayed weights and the rest (weight decay 0). Frozen parameters are left out."""
    if isinstance(named_parameters, nn.Module):
        named_parameters = named_parameters.named_parameters()
    decay, no_decay = [], []
    for name, param in named_parameters:
        if param.requires_grad:
            (decay if decays(name, rule) else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_steps(total_steps: int, warmup_proportion: float) -> int:
    return math.ceil(warmup_proportion * total_steps)


def linear_warmup_decay(total_steps: int, warmup_proportion: float) -> Callable[[torch.optim.Optimizer], object]:
    """A scheduler factory (what ``deepspeed.initialize(lr_scheduler=...)`` takes); call it on an optimizer."""

    def build(optimizer: torch.optim.Optimizer):
        return get_linear_schedule_with_warmup(optimizer, warmup_steps(total_steps, warmup_proportion), total_steps)

    return build
