"""``mse``: squared error between student and teacher logits, as the public DistilBERT code computes it.

    L_mse = sum over selected rows and vocabulary of (z_s - z_t)^2 / n_rows

(``MSELoss(reduction="sum") / n_rows`` in ``distiller.py``: a per-token sum over the vocabulary, averaged over
the same rows as ``ce``.) Temperature is not applied, as in the original.
"""

from __future__ import annotations

import torch

from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm, ModelDims, check_rows, select_rows


@LOSS_TERMS.register("mse")
class LogitMSE(LossTerm):
    def __init__(self, name: str, dims: ModelDims, temperature: float, rows: str = "tokens"):
        super().__init__(name, dims, temperature)
        self.rows = check_rows(rows, f"loss_options.{name}.rows")

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        rows = select_rows(self.rows, outputs)  # (bs, seq_len)
        s_logits = outputs.student_logits[rows].float()  # (n_rows, voc_size)
        t_logits = outputs.teacher_logits[rows].float()  # (n_rows, voc_size)
        if s_logits.shape[0] == 0:
            return outputs.student_logits.sum() * 0.0
        return (s_logits - t_logits).pow(2).sum() / s_logits.shape[0]
