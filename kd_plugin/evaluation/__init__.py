"""Evaluation of teachers and students: masked-token accuracy on held-out text (more tasks live beside it)."""

from kd_plugin.evaluation.masked_token_accuracy import masked_lm_accuracy, masked_position_logits

__all__ = ["masked_lm_accuracy", "masked_position_logits"]
