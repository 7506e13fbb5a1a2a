"""The distillation run's final measurement, on held-out documents, by the objective the models were trained for:

* masked LMs: masked-token accuracy of teacher and student on the same fixed masks
  (:mod:`kd_plugin.evaluation.masked_token_accuracy`), logged as ``held_out_mlm_accuracy_<model>``;
* causal LMs: next-token accuracy and perplexity (:mod:`kd_plugin.evaluation.next_token_accuracy`), logged as
  ``held_out_clm_accuracy_<model>`` and ``held_out_perplexity_<model>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from datasets import Dataset
from transformers import PreTrainedModel

from kd_plugin.evaluation.masked_token_accuracy import masked_lm_accuracy
from kd_plugin.evaluation.next_token_accuracy import next_token_accuracy

logger = logging.getLogger(__name__)

# objective -> (scorer(model, split, tokenizer, max_sequences, seed, **progress), metric prefix, what is measured)
HELD_OUT_SCORES = {
    "masked_lm": (lambda model, split, tok, n, seed, **progress: masked_lm_accuracy(
        model, split, tok, max_sequences=n, seed=seed, **progress),
                  "held_out_mlm", "masked-token accuracy"),
    "causal_lm": (lambda model, split, tok, n, seed, **progress: next_token_accuracy(
        model, split, tok, max_sequences=n, **progress),
                  "held_out_clm", "next-token accuracy"),
}
RESULT_KEYS = {objective: prefix for objective, (_, prefix, _) in HELD_OUT_SCORES.items()}  # the run's result key


def held_out_accuracy(models: dict[str, PreTrainedModel], held_out: Dataset, tokenizer, max_sequences: int | None,
                      seed: int, step: int, log_scalar: Callable[[str, float, int], None] | None = None,
                      objective: str = "masked_lm", progress: bool | None = None) -> dict[str, dict[str, float]]:
    """``{name: {"accuracy", "loss", ...}}`` for each model (on the CPU, in fp32), logged at ``step`` when
    ``log_scalar`` is given. Empty when there is nothing to measure (``max_sequences == 0`` or an empty split).
    ``progress``: per model, a bar (True), plain lines (False) or nothing (None) over its batches."""
    if max_sequences == 0 or len(held_out) == 0:
        return {}
    score, prefix, what = HELD_OUT_SCORES[objective]
    scores = {}
    for name, model in models.items():
        scores[name] = score(model.float().cpu(), held_out, tokenizer, max_sequences, seed, progress=progress,
                             desc=f"held-out {what} of the {name}")
        if log_scalar is not None:
            log_scalar(f"{prefix}_accuracy_{name}", scores[name]["accuracy"], step)
            if "perplexity" in scores[name]:
                log_scalar(f"held_out_perplexity_{name}", scores[name]["perplexity"], step)
    logger.info("held-out %s: %s", what, ", ".join(f"{name} {s['accuracy']:.3f}" for name, s in scores.items()))
    return scores
