"""``mlm``: cross-entropy of the student's predictions at the masked positions (the hard-label loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_plugin.losses.outputs import DistillationOutputs
from kd_plugin.losses.term import LOSS_TERMS, LossTerm


@LOSS_TERMS.register("mlm")
class MaskedLMCrossEntropy(LossTerm):
    def forward(self, outputs: DistillationOutputs) -> torch.Tensor:
        logits = outputs.student_logits  # (bs, seq_len, voc_size)
        labels = outputs.mlm_labels  # (bs, seq_len)
        if not bool(labels.ne(-100).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
