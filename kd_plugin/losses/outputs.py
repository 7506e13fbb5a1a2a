"""What every loss term reads: the student's and the frozen teacher's outputs for one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistillationOutputs:
    """One batch seen by both models.

    Hidden states follow transformers' convention: index 0 is the embedding output, index i the output of
    layer i, so a tuple has ``n_layers + 1`` entries. They are ``None`` when no term asked for them.
    """

    student_logits: torch.Tensor  # (bs, seq_len, voc_size)
    teacher_logits: torch.Tensor  # (bs, seq_len, voc_size)
    attention_mask: torch.Tensor  # (bs, seq_len), 1 for real tokens, 0 for padding
    mlm_labels: torch.Tensor  # (bs, seq_len), original id at masked positions, -100 elsewhere
    student_hidden_states: tuple[torch.Tensor, ...] | None = None  # each (bs, seq_len, dim_s)
    teacher_hidden_states: tuple[torch.Tensor, ...] | None = None  # each (bs, seq_len, dim_t)
    student_attentions: tuple[torch.Tensor, ...] | None = None  # each (bs, n_heads, seq_len, seq_len)
    teacher_attentions: tuple[torch.Tensor, ...] | None = None  # each (bs, n_heads, seq_len, seq_len)

    @property
    def token_mask(self) -> torch.Tensor:
        return self.attention_mask.bool()  # (bs, seq_len)

    @property
    def masked_positions(self) -> torch.Tensor:
        return self.mlm_labels.ne(-100)  # (bs, seq_len)
