"""Scores: accuracy per task and the unweighted mean over tasks (GLUE's macro score)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def accuracy(predictions: Sequence[int] | torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    """Fraction of positions where the predicted class equals the label."""
    predictions = torch.as_tensor(predictions)  # (n,)
    labels = torch.as_tensor(labels)  # (n,)
    if predictions.shape != labels.shape or predictions.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two non-empty 1-D sequences of one length, got {tuple(predictions.shape)} "
                         f"and {tuple(labels.shape)}")
    return predictions.eq(labels).double().mean().item()


def macro_average(scores: Mapping[str, float]) -> float:
    """Mean over tasks, each task weighted the same whatever its size (as GLUE's overall score)."""
    if not scores:
        raise ValueError("no task scores to average")
    return sum(scores.values()) / len(scores)
