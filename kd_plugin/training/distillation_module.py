"""The module the DeepSpeed engine trains: the student plus any trainable loss parts (projections).

The frozen teacher is held as a plain attribute, NOT a submodule, so it stays outside the engine, its ZeRO
partitioning and its optimizer; it runs in eval mode under ``torch.no_grad``. The forward pass is timed per
phase when the trainer's :class:`~kd_plugin.training.phase_timer.PhaseTimer` is on (it is a no-op otherwise).

With ``fuse_lm_head`` (``performance.fuse_lm_head``) both models run with their vocabulary projection skipped
(:mod:`kd_plugin.training.head_features`) and the loss terms project only the rows they read, chunk by chunk:
the same losses and gradients without either model's full logits. The time of the projections then counts in
the ``loss`` phase, not in the forwards.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from kd_plugin.losses import DistillationOutputs, LossMixture
from kd_plugin.losses.logit_kernels import auto_chunk_rows
from kd_plugin.losses.projected_logits import ProjectedLogits
from kd_plugin.training.head_features import head_features
from kd_plugin.training.phase_timer import PhaseTimer


def freeze_teacher(teacher: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    teacher = teacher.to(dtype).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillationModule(nn.Module):
    def __init__(self, student: PreTrainedModel, mixture: LossMixture, teacher: PreTrainedModel,
                 logit_chunk_rows: int | str | None = None, timer: PhaseTimer | None = None,
                 fuse_lm_head: bool = False):
        super().__init__()
        self.student = student
        self.mixture = mixture
        object.__setattr__(self, "teacher", teacher)  # deliberately not registered (see module docstring)
        self.logit_chunk_rows = logit_chunk_rows
        object.__setattr__(self, "timer", timer or PhaseTimer(enabled=False))
        self.fuse_lm_head = fuse_lm_head

    def _chunk_rows(self, voc_size: int, device: torch.device) -> int | None:
        """``performance.logit_chunk_rows``, with ``auto`` resolved for this vocabulary and device."""
        if self.logit_chunk_rows == "auto":
            return auto_chunk_rows(voc_size, device.type)
        return self.logit_chunk_rows

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                token_rows: torch.Tensor | None = None, target_rows: torch.Tensor | None = None,
                padded: bool = True) -> dict[str, torch.Tensor]:
        """``{"loss_<term>": weighted term, ..., "loss": total}``, each a scalar tensor on the device.

        input_ids, attention_mask, labels: (bs, seq_len); token_rows (n_tokens,), target_rows (n_targets,): flat
        row indices from the data stream (computed from the masks when not given). ``padded=False`` (the host
        knows no position is padding) gives the models no attention mask: the same attention, without
        transformers' check of the mask on the device (``padding_mask.all()``, a host synchronisation per
        forward) and with the kernels that need no mask; the loss terms still read ``attention_mask``.
        """
        hidden = "hidden_states" in self.mixture.needs
        attentions = "attentions" in self.mixture.needs
        model_mask = attention_mask if padded else None
        with (self.timer.phase("teacher_forward"), torch.no_grad(),
              head_features(self.teacher, self.fuse_lm_head) as t_head):
            t_out = self.teacher(input_ids=input_ids, attention_mask=model_mask,
                                 output_hidden_states=hidden, output_attentions=attentions)
            t_logits = t_out.logits if t_head is None else ProjectedLogits.of(t_out.logits, t_head)
        with self.timer.phase("student_forward"), head_features(self.student, self.fuse_lm_head) as s_head:
            s_out = self.student(input_ids=input_ids, attention_mask=model_mask,
                                 output_hidden_states=hidden, output_attentions=attentions)
        s_logits = s_out.logits if s_head is None else ProjectedLogits.of(s_out.logits, s_head)
        outputs = DistillationOutputs(
            student_logits=s_logits,  # (bs, seq_len, voc_size), or the head's features and projection
            teacher_logits=t_logits,  # (bs, seq_len, voc_size), or the head's features and projection
            attention_mask=attention_mask,
            labels=labels,
            student_hidden_states=s_out.hidden_states if hidden else None,
            teacher_hidden_states=t_out.hidden_states if hidden else None,
            student_attentions=s_out.attentions if attentions else None,
            teacher_attentions=t_out.attentions if attentions else None,
            token_rows=token_rows,
            target_rows=target_rows,
            logit_chunk_rows=self._chunk_rows(s_out.logits.shape[-1] if s_head is None else s_head.out_features,
                                              input_ids.device),
        )
        with self.timer.phase("loss"):
            return self.mixture(outputs)
