"""``causal_lm``: next-token prediction (DistilGPT2's objective, and every decoder LM's).

    labels[b, i] = input_ids[b, i + 1]   where attention_mask[b, i + 1] == 1
                 = -100                  elsewhere (the last position, and every position before padding)

This is the original distiller's ``shift_logits = s_logits[..., :-1, :]``, ``shift_labels = lm_labels[..., 1:]``
with ``lm_labels[~attention_mask] = -100``, written as labels aligned with the logits that predict them, so the
loss selects rows like the masked-LM loss does (no shifted copy of the logits). Inputs are not corrupted.
"""

from __future__ import annotations

import torch

from kd_plugin.masking import IGNORE_INDEX, MaskingConfig
from kd_plugin.objectives.objective import Objective, register_objective


def next_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(bs, seq_len) labels: the next real token, -100 where there is none."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)  # (bs, seq_len)
    following = input_ids[:, 1:]  # (bs, seq_len - 1)
    labels[:, :-1] = following.masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
    return labels


class NextTokenTargets:
    """A :class:`~kd_plugin.objectives.objective.TargetMaker` without randomness (the generator is unused)."""

    def __init__(self, masking: MaskingConfig | None = None, tokenizer=None, token_counts=None):
        pass

    def make(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        return input_ids, next_token_labels(input_ids, attention_mask)  # (bs, seq_len) each


CAUSAL_LM = register_objective(Objective(
    name="causal_lm", auto_model="AutoModelForCausalLM", pipeline_tag="text-generation", hard_label_term="clm",
    hard_label_key="alpha_clm", targets=NextTokenTargets, needs_mask_token=False))
