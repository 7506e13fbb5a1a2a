"""``attention_kl``: KL between teacher and student self-attention distributions (MiniLM's L_AT).

    L = mean over heads and real query tokens of KL( A_t[h, q, :] || A_s[h, q, :] ),  averaged over layer pairs

Layers are numbered 1..n_layers (attention of layer i); default pair: the last layers. Both models need the
same number of heads; the attention rows already put zero mass on padded keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kd_plugin.errors import ConfigError
from kd_plugin.losses.layer_pairs import resolve_layer_pairs
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm, ModelDims

_EPS = 1e-12


@LOSS_TERMS.register("attention_kl")
class AttentionKL(LossTerm):
    needs = frozenset({"attentions"})

    def __init__(
        self, name: str, dims: ModelDims, temperature: float, layers: str | Sequence[Sequence[int]] = "last"
    ):
        super().__init__(name, dims, temperature)
        if dims.student_heads != dims.teacher_heads:
            raise ConfigError(
                f"loss.weights.{name}",
                f"student has {dims.student_heads} attention heads and teacher {dims.teacher_heads}",
                "attention_kl only between models with the same number of heads",
            )
        self.pairs = resolve_layer_pairs(
            layers, dims.student_layers, dims.teacher_layers, key=f"loss_options.{name}.layers", first_index=1
        )

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        if outputs.student_attentions is None or outputs.teacher_attentions is None:
            raise RuntimeError(f"loss term '{self.name}' needs attentions; the trainer did not request them")
        queries = outputs.token_mask  # (bs, seq_len)
        losses = []
        for s, t in self.pairs:
            a_s = outputs.student_attentions[s - 1].float().transpose(1, 2)[queries]  # (n_tokens, heads, seq_len)
            a_t = outputs.teacher_attentions[t - 1].float().transpose(1, 2)[queries]  # (n_tokens, heads, seq_len)
            kl = (a_t * ((a_t + _EPS).log() - (a_s + _EPS).log())).sum(-1)  # (n_tokens, heads)
            losses.append(kl.mean())
        return torch.stack(losses).mean()
