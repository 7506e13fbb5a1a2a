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

# What is spared weight decay, per rule (kd_plugin.config.optim.NO_DECAY_RULES):
# "layer_norms": biases and the gains of every normalisation layer, whatever the architecture calls them (BERT's
# LayerNorm, DistilBERT's sa_layer_norm / output_layer_norm, GPT-2's ln_1 / ln_f, Llama's input_layernorm /
# norm): every parameter with fewer than two dimensions, as no matrix or embedding table has;
# "original": the public distiller.py's name list, which a DistilBERT student matches only at embeddings.LayerNorm.
ORIGINAL_NO_DECAY = ("bias", "LayerNorm.weight")


def decays(name: str, param: torch.Tensor, rule: str = "layer_norms") -> bool:
    """Whether ``param`` (called ``name``) gets weight decay under ``rule``."""
    if rule == "original":
        return not any(key in name for key in ORIGINAL_NO_DECAY)  # substring match, as distiller.py
    return param.ndim >= 2


def parameter_groups(named_parameters: Iterable[tuple[str, nn.Parameter]] | nn.Module, weight_decay: float,
                     rule: str = "layer_norms") -> list[dict]:
    """Two AdamW groups: decayed weights and the rest (weight decay 0). Frozen parameters are left out."""
    if isinstance(named_parameters, nn.Module):
        named_parameters = named_parameters.named_parameters()
    decay, no_decay = [], []
    for name, param in named_parameters:
        if param.requires_grad:
            (decay if decays(name, param, rule) else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_steps(total_steps: int, warmup_proportion: float) -> int:
    return math.ceil(warmup_proportion * total_steps)


def linear_warmup_decay(total_steps: int, warmup_proportion: float) -> Callable[[torch.optim.Optimizer], object]:
    """A scheduler factory (what ``deepspeed.initialize(lr_scheduler=...)`` takes); call it on an optimizer."""

    def build(optimizer: torch.optim.Optimizer):
        return get_linear_schedule_with_warmup(optimizer, warmup_steps(total_steps, warmup_proportion), total_steps)

    return build
