"""``optim.*``: AdamW with a linear warm-up then linear decay, the recipe shared by distillation and the
teacher's preparation (one check, one optimizer builder: :mod:`kd_plugin.optimization`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.declarations import Block, setting
from kd_plugin.errors import ConfigError

# Which parameters are spared weight decay: biases and every layer-norm weight (DistilBERT names them
# sa_layer_norm, output_layer_norm, vocab_layer_norm), or exactly the public distiller.py's list
# ["bias", "LayerNorm.weight"], which in a DistilBERT student spares only the embeddings' LayerNorm.
NO_DECAY_RULES = ("layer_norms", "original")


# A clipping norm that must clip (the teacher's preparation, fine-tuning): > 0, where optim.max_grad_norm allows 0.
clipping_norm_above_zero = partial(values.number, low=0.0, high=math.inf, low_open=True, high_open=True)


def _betas(value: Any, key: str) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ConfigError(key, f"{value!r} is not a pair", "[beta1, beta2], each in [0, 1)")
    return tuple(values.number(b, f"{key}[{i}]", 0.0, 1.0, high_open=True) for i, b in enumerate(value))


@dataclass(frozen=True)
class OptimSettings:
    lr: float = setting(5e-4, "peak learning rate (linear warm-up, then linear decay to 0)",
                        partial(values.number, low=0.0, high=1.0, low_open=True))
    betas: tuple[float, float] = setting([0.9, 0.98], "AdamW's [beta1, beta2]", _betas)
    eps: float = setting(1e-6, "AdamW's epsilon", partial(values.number, low=0.0, high=1.0, low_open=True))
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay", partial(values.number, low=0.0, high=1.0))
    warmup_proportion: float = setting(0.05, "share of the steps spent warming the learning rate up",
                                       partial(values.number, low=0.0, high=1.0, high_open=True))
    max_grad_norm: float = setting(5.0, "gradient clipping norm (0 = no clipping)",
                                   partial(values.number, low=0.0, high=math.inf, high_open=True))
    no_decay: str = setting("layer_norms", "parameters spared weight decay: layer_norms (biases and every "
                            "layer norm) | original: names containing bias / LayerNorm.weight (as distiller.py)",
                            partial(values.choice, choices=NO_DECAY_RULES), field_default=True)
    schedule_extra_step: bool = setting(False, "True: plan the linear schedule for max_steps + 1 (as distiller.py)",
                                        values.flag, field_default=True)

    @classmethod
    def from_dict(cls, optim: Mapping[str, Any], prefix: str = "optim", lr: Any = None, lr_key: str | None = None,
                  clipping_may_be_zero: bool = True) -> OptimSettings:
        """From an ``optim`` block; ``lr`` comes from the block unless given (preparation keeps it outside)."""
        if not clipping_may_be_zero:  # the teacher's preparation always clips
            clipping_norm_above_zero(optim.get("max_grad_norm"), f"{prefix}.max_grad_norm")
        given = dict(optim) if lr is None else {**optim, "lr": lr}
        return cls(**OPTIM.parse(given, prefix=prefix, keys={"lr": lr_key} if lr_key else None))

    def schedule_length(self, total_steps: int) -> int:
        """Steps the linear schedule is planned for (distiller.py plans ``steps + 1``: lr ends above 0)."""
        return total_steps + 1 if self.schedule_extra_step else total_steps


OPTIM = Block.of("optim", "AdamW with a linear warm-up then linear decay (kd_plugin.optimization)", OptimSettings)
