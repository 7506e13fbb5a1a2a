"""What every loss term reads: the student's and the frozen teacher's outputs for one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kd_plugin.losses.projected_logits import ProjectedLogits


@dataclass(frozen=True)
class DistillationOutputs:
    """One batch seen by both models.

    Hidden states follow transformers' convention: index 0 is the embedding output, index i the output of
    layer i, so a tuple has ``n_layers + 1`` entries. They are ``None`` when no term asked for them.

    Targets: ``labels`` holds, at each position with a hard-label target, the token the model must predict
    there, and -100 elsewhere: for a masked LM the original token at each masked position, for a causal LM the
    next token (``labels[:, i] = input_ids[:, i + 1]`` where that token is real; the last position has none).

    Logits: the full (bs, seq_len, voc_size) tensors, or (``performance.fuse_lm_head``) each model's LM-head
    features with its vocabulary projection (:class:`~kd_plugin.losses.projected_logits.ProjectedLogits`), which
    the terms project only for the rows they read (``select_rows``, the shared pass).

    Row indices: the trainer's data stream computes, on the host, which flat positions of the
    ``(bs * seq_len)`` batch are real tokens and which have targets, and hands them over with the batch, so the
    terms select rows with ``index_select`` and never call ``nonzero`` on the device (a host synchronisation on
    CUDA). Without them (tests, downstream use) they are computed here from the masks.
    """

    student_logits: torch.Tensor | ProjectedLogits  # (bs, seq_len, voc_size), or the head's features + projection
    teacher_logits: torch.Tensor | ProjectedLogits  # (bs, seq_len, voc_size), or the head's features + projection
    attention_mask: torch.Tensor  # (bs, seq_len), 1 for real tokens, 0 for padding
    labels: torch.Tensor  # (bs, seq_len), the target id (masked token / next token), -100 elsewhere
    student_hidden_states: tuple[torch.Tensor, ...] | None = None  # each (bs, seq_len, dim_s)
    teacher_hidden_states: tuple[torch.Tensor, ...] | None = None  # each (bs, seq_len, dim_t)
    student_attentions: tuple[torch.Tensor, ...] | None = None  # each (bs, n_heads, seq_len, seq_len)
    teacher_attentions: tuple[torch.Tensor, ...] | None = None  # each (bs, n_heads, seq_len, seq_len)
    token_rows: torch.Tensor | None = None  # (n_tokens,) flat indices of real tokens in bs * seq_len
    target_rows: torch.Tensor | None = None  # (n_targets,) flat indices of positions with a target
    logit_chunk_rows: int | None = None  # rows per chunk for the logit-level terms (memory); None = all

    @property
    def token_mask(self) -> torch.Tensor:
        return self.attention_mask.bool()  # (bs, seq_len)

    @property
    def target_positions(self) -> torch.Tensor:
        return self.labels.ne(-100)  # (bs, seq_len)

    @property
    def token_row_index(self) -> torch.Tensor:
        """(n_tokens,) flat indices of real (non-pad) tokens."""
        if self.token_rows is not None:
            return self.token_rows
        return self.token_mask.flatten().nonzero().squeeze(1)

    @property
    def target_row_index(self) -> torch.Tensor:
        """(n_targets,) flat indices of the positions with a hard-label target."""
        if self.target_rows is not None:
            return self.target_rows
        return self.target_positions.flatten().nonzero().squeeze(1)

    @property
    def target_labels(self) -> torch.Tensor:
        """(n_targets,) the target token ids, in ``target_row_index`` order."""
        return self.labels.flatten().index_select(0, self.target_row_index)
