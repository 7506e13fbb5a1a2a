"""The distillation run's final measurement: masked-token accuracy of teacher and student on held-out documents
(the same fixed masks for both, :mod:`kd_plugin.evaluation.masked_token_accuracy`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from datasets import Dataset
from transformers import PreTrainedModel

from kd_plugin.evaluation.masked_token_accuracy import masked_lm_accuracy

logger = logging.getLogger(__name__)


def held_out_accuracy(models: dict[str, PreTrainedModel], held_out: Dataset, tokenizer, max_sequences: int | None,
                      seed: int, step: int, log_scalar: Callable[[str, float, int], None] | None = None
                      ) -> dict[str, dict[str, float]]:
    """``{name: {"accuracy", "loss", "n_masked", ...}}`` for each model (on the CPU, in fp32), logged as
    ``held_out_mlm_accuracy_<name>`` at ``step`` when ``log_scalar`` is given. Empty when there is nothing to
    measure (``max_sequences == 0`` or an empty split)."""
    if max_sequences == 0 or len(held_out) == 0:
        return {}
    scores = {}
    for name, model in models.items():
        scores[name] = masked_lm_accuracy(model.float().cpu(), held_out, tokenizer, max_sequences=max_sequences,
                                          seed=seed)
        if log_scalar is not None:
            log_scalar(f"held_out_mlm_accuracy_{name}", scores[name]["accuracy"], step)
    logger.info("held-out masked-token accuracy: %s",
                ", ".join(f"{name} {score['accuracy']:.3f}" for name, score in scores.items()))
    return scores
