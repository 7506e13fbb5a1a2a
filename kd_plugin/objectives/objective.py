"""A training objective: what the hard-label loss predicts and how a batch gets its targets.

* ``masked_lm`` (BERT, RoBERTa, DistilBERT): a fresh dynamic mask per batch; the targets are the original tokens
  at the masked positions (:mod:`kd_plugin.masking`); the hard-label term is ``mlm``.
* ``causal_lm`` (GPT-2, Llama, Qwen2): no masking; the target at position ``i`` is token ``i + 1`` where that
  token is real (padding and the last position have none); the hard-label term is ``clm``.

A model family (:mod:`kd_plugin.families`) names its objective; the data stream, the loss mixture's checks,
the export and the model card ask the objective, never the family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from kd_plugin.masking import MaskingConfig
from kd_plugin.registry import Registry


class TargetMaker(Protocol):
    def make(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(model inputs, labels), each (bs, seq_len): the inputs after any corruption, the target id at each
        position with a target and -100 elsewhere."""
        ...


@dataclass(frozen=True)
class Objective:
    name: str
    auto_model: str  # the transformers auto class that loads such a model, e.g. "AutoModelForCausalLM"
    pipeline_tag: str  # the Hub's task tag of the exported student: fill-mask | text-generation
    hard_label_term: str  # the registered loss term that trains on the targets: mlm | clm
    hard_label_key: str  # its weight's config key: alpha_mlm | alpha_clm
    targets: Callable[[MaskingConfig, object, torch.Tensor | None], TargetMaker]  # (masking, tokenizer, counts)
    needs_mask_token: bool  # the tokenizer must have a [MASK] token


OBJECTIVES: Registry[Objective] = Registry("objective")


def register_objective(objective: Objective) -> Objective:
    OBJECTIVES.register(objective.name)(objective)
    return objective


def objective_of(config) -> Objective:
    """The objective of a model config's family (a ``ConfigError`` when the family has no adapter)."""
    from kd_plugin.families import family_of

    return OBJECTIVES.get(family_of(config).objective)


def lm_auto_class(config):
    """The transformers auto class that builds or loads this architecture with its LM head."""
    import transformers

    return getattr(transformers, objective_of(config).auto_model)


def config_from_dict(values: dict):
    """A model config of the class its ``model_type`` names (a checkpoint stores ``config.to_dict()``)."""
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[values["model_type"]].from_dict(values)
