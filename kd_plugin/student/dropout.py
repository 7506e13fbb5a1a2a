"""Override the student's dropout (DistilBERT copies the teacher's by default)."""

from __future__ import annotations

from torch import nn
from transformers import DistilBertForMaskedLM

from kd_plugin.errors import ConfigError


def set_dropout(student: DistilBertForMaskedLM, p: float) -> None:
    """Set hidden and attention dropout to ``p`` in the modules and in the saved config."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
        raise ConfigError("student.dropout", f"{p!r} is out of range", "[0, 1), or null for the teacher's")
    for module in student.modules():
        if isinstance(module, nn.Dropout):
            module.p = float(p)
    student.config.dropout = student.config.attention_dropout = float(p)
