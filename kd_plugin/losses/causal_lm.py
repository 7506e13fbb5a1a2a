"""``clm``: the causal-LM loss of DistilGPT2 (``alpha_clm``), cross-entropy of the student's next-token predictions.

    L_clm = mean over positions i with a real next token of -log softmax(z_s[i])[x[i + 1]]

Equal to the original distiller's ``CrossEntropyLoss(ignore_index=-100)(shift_logits, shift_labels)``: the
targets (``outputs.labels``, made by :mod:`kd_plugin.objectives.causal_lm`) are the next tokens aligned with
the logits that predict them, so only those rows go through the softmax.
"""

from __future__ import annotations

from functools import partial

import torch

from kd_plugin.losses.fused_logit_rows import RowPart
from kd_plugin.losses.logit_kernels import cross_entropy_chunk, masked_lm_cross_entropy, select_rows
from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm


@LOSS_TERMS.register("clm")
class CausalLMCrossEntropy(LossTerm):
    objectives = frozenset({"causal_lm"})

    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        logits = select_rows(outputs.student_logits, outputs.target_row_index)  # (n_targets, voc_size)
        return masked_lm_cross_entropy(logits, outputs.target_labels, outputs.logit_chunk_rows)  # ()

    def row_part(self, outputs: DistillationOutputs) -> RowPart | None:
        """Every row, the labels' -100 (padding, a sequence's last token) dropping the rows without a target."""
        chunk = partial(cross_entropy_chunk, may_ignore=True)
        return RowPart(chunk, outputs.labels.flatten(), None, outputs.target_row_index.shape[0])
