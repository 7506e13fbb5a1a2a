"""``ce``: the soft-target loss of Hinton et al. as DistilBERT uses it.

    L_ce = T^2 * mean over selected token rows of KL( softmax(z_t / T) || softmax(z_s / T) )

KL is summed over the vocabulary and averaged over rows ("batchmean" per token, as in the public
``distiller.py``). The T^2 factor keeps gradient magnitudes comparable across temperatures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm, ModelDims, check_rows, select_rows


@LOSS_TERMS.register("ce")
class SoftTargetKL(LossTerm):
    uses_temperature = True

    def __init__(self, name: str, dims: ModelDims, temperature: float, rows: str = "tokens"):
        super().__init__(name, dims, temperature)
        self.rows = check_rows(rows, f"loss_options.{name}.rows")

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        rows = select_rows(self.rows, outputs)  # (bs, seq_len)
        s_logits = outputs.student_logits[rows]  # (n_rows, voc_size)
        t_logits = outputs.teacher_logits[rows]  # (n_rows, voc_size)
        if s_logits.shape[0] == 0:
            return outputs.student_logits.sum() * 0.0
        T = self.temperature
        kl = F.kl_div(
            F.log_softmax(s_logits.float() / T, dim=-1),
            F.softmax(t_logits.float() / T, dim=-1),
            reduction="batchmean",
        )  # () mean over rows of sum over vocabulary
        return kl * T**2

