"""``masked_lm``: DistilBERT's objective, dynamic masking with the paper's 80/10/10 corruption."""

from __future__ import annotations

import torch

from kd_plugin.masking import DynamicMasker, MaskingConfig
from kd_plugin.objectives.objective import Objective, register_objective


class MaskedTargets:
    """The dynamic masker as a :class:`~kd_plugin.objectives.objective.TargetMaker`."""

    def __init__(self, masker: DynamicMasker):
        self.masker = masker

    def make(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.masker.mask(input_ids, attention_mask, generator)  # (bs, seq_len) each


def masked_targets(masking: MaskingConfig, tokenizer, token_counts: torch.Tensor | None) -> MaskedTargets:
    """The training masker for ``tokenizer``'s vocabulary (frequency smoothing from ``token_counts``)."""
    return MaskedTargets(DynamicMasker(masking, vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                                       pad_token_id=tokenizer.pad_token_id,
                                       special_token_ids=tokenizer.all_special_ids, token_counts=token_counts))


MASKED_LM = register_objective(Objective(
    name="masked_lm", auto_model="AutoModelForMaskedLM", pipeline_tag="fill-mask", hard_label_term="mlm",
    hard_label_key="alpha_mlm", targets=masked_targets, needs_mask_token=True))
