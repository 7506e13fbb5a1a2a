"""``mse``: squared error between student and teacher logits, as the public DistilBERT code computes it.

    L_mse = sum over selected rows and vocabulary of (z_s - z_t)^2 / n_rows

(``MSELoss(reduction="sum") / n_rows`` in ``distiller.py``: a per-token sum over the vocabulary, averaged over
the same rows as ``ce``.) Temperature is not applied, as in the original.
"""

from __future__ import annotations

import torch

from kd_plugin.losses.fused_logit_rows import RowPart
from kd_plugin.losses.logit_kernels import logit_mse, logit_mse_chunk, select_rows
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm, ModelDims, check_rows, row_index, token_row_part


@LOSS_TERMS.register("mse")
class LogitMSE(LossTerm):
    def __init__(self, name: str, dims: ModelDims, temperature: float, rows: str = "tokens"):
        super().__init__(name, dims, temperature)
        self.rows = check_rows(rows, f"loss_options.{name}.rows", dims.objective)

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        rows = row_index(self.rows, outputs)  # (n_rows,)
        s_logits = select_rows(outputs.student_logits, rows)  # (n_rows, voc_size)
        t_logits = select_rows(outputs.teacher_logits, rows)  # (n_rows, voc_size)
        return logit_mse(s_logits, t_logits, outputs.logit_chunk_rows)  # ()

    def row_part(self, outputs: DistillationOutputs) -> RowPart | None:
        return token_row_part(outputs, logit_mse_chunk, outputs.teacher_logits) if self.rows == "tokens" else None
