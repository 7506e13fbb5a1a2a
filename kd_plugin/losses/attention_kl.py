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
                f"loss_weights.{name}",  # renamed by the mixture to the key the weight was declared under
                f"student has {dims.student_heads} attention heads and teacher {dims.teacher_heads}",
                "attention_kl only between models with the same number of heads",
            )
        self.pairs = resolve_layer_pairs(
            layers, dims.student_layers, dims.teacher_layers, key=f"loss_options.{name}.layers", first_index=1
        )

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        if outputs.student_attentions is None or outputs.teacher_attentions is None:
            raise RuntimeError(f"loss term '{self.name}' needs attentions; the trainer did not request them")
        queries = outputs.token_row_index  # (n_tokens,) rows of real tokens in (bs * seq_len), from the host
        losses = []
        for s, t in self.pairs:
            # (bs, heads, seq_len, seq_len) -> (bs * seq_len, heads, seq_len) -> (n_tokens, heads, seq_len)
            a_s = outputs.student_attentions[s - 1].float().transpose(1, 2).flatten(0, 1).index_select(0, queries)
            a_t = outputs.teacher_attentions[t - 1].float().transpose(1, 2).flatten(0, 1).index_select(0, queries)
            kl = (a_t * ((a_t + _EPS).log() - (a_s + _EPS).log())).sum(-1)  # (n_tokens, heads)
            losses.append(kl.mean())  # ()
        return torch.stack(losses).mean()  # () mean over layer pairs
