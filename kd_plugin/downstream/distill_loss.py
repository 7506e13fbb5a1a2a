"""Fine-tuning with distillation, the paper's "DistilBERT (D)": the student learns the task's labels and the
soft predictions of a teacher that was fine-tuned on the same task.

    L = alpha_task * CE(z_s, y) + alpha_ce * T^2 * mean over examples of KL( softmax(z_t / T) || softmax(z_s / T) )

The soft-target term is the pre-training ``ce`` term itself (:class:`kd_plugin.losses.soft_targets.SoftTargetKL`),
applied to classification logits: each example is one row, as each token is one row in pre-training. So the
math (temperature, T^2, "batchmean") lives in one place.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kd_plugin.errors import ConfigError
from kd_plugin.losses import LOSS_TERMS, DistillationOutputs, ModelDims

# SoftTargetKL reads only the logits; the model dimensions matter to other terms' validation, not to this one.
_LOGITS_ONLY = ModelDims(student_hidden_size=0, teacher_hidden_size=0, student_layers=0, teacher_layers=0)


def classification_outputs(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> DistillationOutputs:
    """Per-example class logits seen as a batch of one-token sequences (every row real, none masked)."""
    bs = student_logits.shape[0]
    return DistillationOutputs(
        student_logits=student_logits.unsqueeze(1),  # (bs, 1, n_labels)
        teacher_logits=teacher_logits.unsqueeze(1),  # (bs, 1, n_labels)
        attention_mask=torch.ones(bs, 1, dtype=torch.long, device=student_logits.device),  # (bs, 1)
        labels=torch.full((bs, 1), -100, dtype=torch.long, device=student_logits.device),  # (bs, 1)
    )


def check_weight(value: object, key: str) -> float:
    """A loss weight: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(key, f"{value!r} is not a finite number >= 0", ">= 0")
    return float(value)


def check_weights_sum(alpha_task: float, alpha_ce: float, key_prefix: str = "distillation") -> None:
    if alpha_task + alpha_ce == 0:
        raise ConfigError(f"{key_prefix}.alpha_task", "alpha_task and alpha_ce are both 0: nothing to learn",
                          "alpha_task + alpha_ce > 0")


def check_temperature(value: object, key: str) -> float:
    """The soft targets' temperature: a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(key, f"{value!r} is not > 0", "T > 0 (the paper: 2)")
    return float(value)


class FinetuneLoss(nn.Module):
    """``alpha_task`` * cross-entropy on the labels (+ ``alpha_ce`` * the ``ce`` term when teacher logits are given)."""

    def __init__(self, alpha_task: float = 1.0, alpha_ce: float = 0.0, temperature: float = 1.0,
                 key_prefix: str = "distillation"):
        super().__init__()
        self.alpha_task = check_weight(alpha_task, f"{key_prefix}.alpha_task")
        self.alpha_ce = check_weight(alpha_ce, f"{key_prefix}.alpha_ce")
        check_weights_sum(self.alpha_task, self.alpha_ce, key_prefix)
        temperature = check_temperature(temperature, f"{key_prefix}.T")
        self.soft_targets = LOSS_TERMS.get("ce")("ce", _LOGITS_ONLY, temperature, rows="tokens")

    @property
    def uses_teacher(self) -> bool:
        return self.alpha_ce > 0

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(weighted total, unweighted parts for logging). ``student_logits``/``teacher_logits``: (bs, n_labels)."""
        task = F.cross_entropy(student_logits.float(), labels)  # () mean over the batch
        total = self.alpha_task * task
        parts = {"task": task.item()}
        if self.uses_teacher:
            if teacher_logits is None:
                raise ValueError("alpha_ce > 0 needs the teacher's logits")
            ce = self.soft_targets(classification_outputs(student_logits, teacher_logits))  # ()
            total = total + self.alpha_ce * ce
            parts["ce"] = ce.item()
        return total, parts
