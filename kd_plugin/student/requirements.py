"""What the loss terms need from the models, applied where the models are built.

Each loss term declares the extra outputs it reads (``LossTerm.needs``: "hidden_states", "attentions"). A
term that reads attention probabilities needs the eager attention path (SDPA / flash kernels never
materialise the probabilities) and no attention dropout in the student (a dropped probability is not part of
the distribution being compared). Every other run uses fused SDPA attention.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from transformers import PreTrainedModel

from kd_plugin.errors import ConfigError
from kd_plugin.families import family_of


@dataclass(frozen=True)
class ModelRequirements:
    outputs: frozenset[str]  # extra model outputs the active loss terms read
    attn_implementation: str  # for the teacher and the student: "sdpa" or "eager"

    @classmethod
    def of(cls, outputs: Iterable[str], preference: str = "auto") -> ModelRequirements:
        """From the active terms' needs and ``performance.attn_implementation``."""
        outputs = frozenset(outputs)
        if "attentions" in outputs:
            if preference == "sdpa":
                raise ConfigError("performance.attn_implementation", "a loss term reads attention probabilities, "
                                  "which SDPA kernels do not return", "auto or eager")
            return cls(outputs, "eager")
        return cls(outputs, "sdpa" if preference == "auto" else preference)

    @property
    def attention_probabilities(self) -> bool:
        return "attentions" in self.outputs


def apply_to_student(student: PreTrainedModel, requirements: ModelRequirements) -> None:
    """Attention implementation, and attention dropout off when attention probabilities are compared."""
    student.set_attn_implementation(requirements.attn_implementation)
    if requirements.attention_probabilities:
        family_of(student.config, key="student").set_attention_dropout(student, 0.0)
