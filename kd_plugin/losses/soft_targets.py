"""``ce``: the soft-target loss of Hinton et al. as DistilBERT uses it.

    L_ce = T^2 * mean over selected token rows of KL( softmax(z_t / T) || softmax(z_s / T) )

KL is summed over the vocabulary and averaged over rows ("batchmean" per token, as in the public
``distiller.py``). The T^2 factor keeps gradient magnitudes comparable across temperatures. Computed by
:func:`kd_plugin.losses.logit_kernels.soft_target_kl` (row chunks, gradient formed in the forward pass).
"""

from __future__ import annotations

from functools import partial

import torch

from kd_plugin.losses.fused_logit_rows import RowPart
from kd_plugin.losses.logit_kernels import select_rows, soft_target_kl, soft_target_kl_chunk
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm, ModelDims, check_rows, row_index, token_row_part


@LOSS_TERMS.register("ce")
class SoftTargetKL(LossTerm):

    def __init__(self, name: str, dims: ModelDims, temperature: float, rows: str = "tokens"):
        super().__init__(name, dims, temperature)
        self.rows = check_rows(rows, f"loss_options.{name}.rows", dims.objective)

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        rows = row_index(self.rows, outputs)  # (n_rows,)
        s_logits = select_rows(outputs.student_logits, rows)  # (n_rows, voc_size)
        t_logits = select_rows(outputs.teacher_logits, rows)  # (n_rows, voc_size)
        return soft_target_kl(s_logits, t_logits, self.temperature, outputs.logit_chunk_rows)  # ()

    def row_part(self, outputs: DistillationOutputs) -> RowPart | None:
        if self.rows != "tokens":
            return None
        chunk = partial(soft_target_kl_chunk, temperature=self.temperature)
        return token_row_part(outputs, chunk, outputs.teacher_logits)
