"""Shared machinery of the hidden-state terms (``cos``, ``hidden_mse``): layer pairs and projections.

When student and teacher widths differ, a comparison needs a declared projection (``projection: "linear"``:
one trainable ``Linear(dim_s, dim_t)`` per pair, trained with the student, as TinyBERT does). Without one
the declaration is rejected before any compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kd_plugin.errors import ConfigError
from kd_plugin.losses.layer_pairs import resolve_layer_pairs
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LossTerm, ModelDims

PROJECTIONS = ("none", "linear")


class HiddenStateTerm(LossTerm):
    needs = frozenset({"hidden_states"})

    def __init__(
        self,
        name: str,
        dims: ModelDims,
        temperature: float,
        layers: str | Sequence[Sequence[int]] = "last",
        projection: str = "none",
    ):
        super().__init__(name, dims, temperature)
        self.pairs = resolve_layer_pairs(
            layers, dims.student_layers, dims.teacher_layers, key=f"loss_options.{name}.layers"
        )
        if projection not in PROJECTIONS:
            raise ConfigError(f"loss_options.{name}.projection", f"unknown projection {projection!r}", str(PROJECTIONS))
        if projection == "none" and dims.student_hidden_size != dims.teacher_hidden_size:
            raise ConfigError(
                f"loss_options.{name}.projection",
                f"student hidden size {dims.student_hidden_size} != teacher hidden size "
                f"{dims.teacher_hidden_size}, so '{name}' needs a declared projection",
                "'linear'",
            )
        self.projections = (
            nn.ModuleList(nn.Linear(dims.student_hidden_size, dims.teacher_hidden_size) for _ in self.pairs)
            if projection == "linear"
            else None
        )

    def aligned_pairs(self, outputs: DistillationOutputs):
        """Yield (student, teacher) hidden states of real tokens for each declared pair."""
        if outputs.student_hidden_states is None or outputs.teacher_hidden_states is None:
            raise RuntimeError(f"loss term '{self.name}' needs hidden states; the trainer did not request them")
        tokens = outputs.token_row_index  # (n_tokens,)
        for i, (s, t) in enumerate(self.pairs):
            s_hidden = outputs.student_hidden_states[s].flatten(0, 1).index_select(0, tokens).float()  # (n_tokens, dim_s)
            t_hidden = outputs.teacher_hidden_states[t].flatten(0, 1).index_select(0, tokens).float()  # (n_tokens, dim_t)
            if self.projections is not None:
                # the engine casts the projection to its 16-bit dtype under bf16/fp16: project in that dtype
                projection = self.projections[i]
                s_hidden = projection(s_hidden.to(projection.weight.dtype)).float()  # (n_tokens, dim_t)
            yield s_hidden, t_hidden

    def compare(self, s_hidden: torch.Tensor, t_hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        losses = [self.compare(s, t) for s, t in self.aligned_pairs(outputs)]
        return torch.stack(losses).mean()  # () mean over layer pairs
