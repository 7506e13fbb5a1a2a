"""Override the student's dropout (a student copies the teacher's by default)."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from kd_plugin.errors import ConfigError
from kd_plugin.families import family_of


def set_dropout(student: PreTrainedModel, p: float) -> None:
    """Set hidden and attention dropout to ``p`` in the modules and in the saved config."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
        raise ConfigError("student.dropout", f"{p!r} is out of range", "[0, 1), or null for the teacher's")
    for module in student.modules():
        if isinstance(module, nn.Dropout):
            module.p = float(p)
    family = family_of(student.config, key="student")
    family.set_attention_dropout(student, p)  # Llama-style attention reads a float, not a module
    for key in family.dropout_keys:  # the saved config says the same
        setattr(student.config, key, float(p))
