"""``optim.*``: AdamW with a linear warm-up then linear decay, the recipe shared by distillation and the
teacher's preparation (one check, one optimizer builder: :mod:`kd_plugin.optimization`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kd_plugin import validation as values
from kd_plugin.errors import ConfigError

# Which parameters are spared weight decay: biases and every layer-norm weight (DistilBERT names them
# sa_layer_norm, output_layer_norm, vocab_layer_norm), or exactly the public distiller.py's list
# ["bias", "LayerNorm.weight"], which in a DistilBERT student spares only the embeddings' LayerNorm.
NO_DECAY_RULES = ("layer_norms", "original")


@dataclass(frozen=True)
class OptimSettings:
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    warmup_proportion: float
    max_grad_norm: float  # 0 = no clipping (distillation only)
    no_decay: str = "layer_norms"
    schedule_extra_step: bool = False  # True: plan the schedule for one step more, as distiller.py does

    @classmethod
    def from_dict(cls, optim: Mapping[str, Any], prefix: str = "optim", lr: Any = None, lr_key: str | None = None,
                  clipping_may_be_zero: bool = True) -> OptimSettings:
        """From an ``optim`` block; ``lr`` comes from the block unless given (preparation keeps it outside)."""
        lr_value = optim.get("lr") if lr is None else lr
        betas = optim.get("betas")
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2):
            raise ConfigError(f"{prefix}.betas", f"{betas!r} is not a pair", "[beta1, beta2], each in [0, 1)")
        return cls(
            lr=values.number(lr_value, lr_key or f"{prefix}.lr", 0.0, 1.0, low_open=True),
            betas=tuple(values.number(b, f"{prefix}.betas[{i}]", 0.0, 1.0, high_open=True)
                        for i, b in enumerate(betas)),
            eps=values.number(optim.get("eps"), f"{prefix}.eps", 0.0, 1.0, low_open=True),
            weight_decay=values.number(optim.get("weight_decay"), f"{prefix}.weight_decay", 0.0, 1.0),
            warmup_proportion=values.number(optim.get("warmup_proportion"), f"{prefix}.warmup_proportion", 0.0, 1.0,
                                            high_open=True),
            max_grad_norm=values.number(optim.get("max_grad_norm"), f"{prefix}.max_grad_norm", 0.0, math.inf,
                                        low_open=not clipping_may_be_zero, high_open=True),
            no_decay=values.choice(optim.get("no_decay", "layer_norms"), f"{prefix}.no_decay", NO_DECAY_RULES),
            schedule_extra_step=values.flag(optim.get("schedule_extra_step", False), f"{prefix}.schedule_extra_step"),
        )

    def schedule_length(self, total_steps: int) -> int:
        """Steps the linear schedule is planned for (distiller.py plans ``steps + 1``: lr ends above 0)."""
        return total_steps + 1 if self.schedule_extra_step else total_steps
