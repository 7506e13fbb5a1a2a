"""Downstream scores and the fine-tuning loss, against computations written out independently here."""

from __future__ import annotations

import math

import pytest
import torch

from kd_plugin.downstream.distill_loss import FinetuneLoss
from kd_plugin.downstream.metrics import accuracy, macro_average
from kd_plugin.errors import ConfigError


def test_accuracy_counts_matches():
    predictions = [0, 1, 2, 2, 1, 0, 3]
    labels = [0, 1, 1, 2, 0, 0, 3]
    matches = 0
    for p, y in zip(predictions, labels, strict=True):
        matches += p == y
    assert accuracy(predictions, labels) == pytest.approx(matches / len(labels)) == pytest.approx(5 / 7)
    assert accuracy(torch.tensor(predictions), torch.tensor(labels)) == pytest.approx(5 / 7)
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_macro_average_weights_tasks_equally_whatever_their_size():
    # a big task at 0.9 and a small one at 0.5: macro 0.7, unlike the pooled accuracy over all examples
    scores = {"big": 0.9, "small": 0.5}
    assert macro_average(scores) == pytest.approx(0.7)
    assert macro_average({"mr": 0.8, "conll": 0.6, "bbc": 0.95, "wiki": 0.45}) == pytest.approx((0.8 + 0.6 + 0.95 + 0.45) / 4)
    with pytest.raises(ValueError):
        macro_average({})


def _kl_by_hand(teacher_row: list[float], student_row: list[float], T: float) -> float:
    def softmax(row):
        exps = [math.exp(v / T) for v in row]
        return [e / sum(exps) for e in exps]

    p, q = softmax(teacher_row), softmax(student_row)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def test_distillation_loss_equals_the_ce_formula_on_hand_made_logits():
    student = [[2.0, -1.0, 0.5], [0.0, 0.3, -0.7]]
    teacher = [[1.0, 0.0, 3.0], [-2.0, 1.5, 0.2]]
    labels = [2, 1]
    T, alpha_task, alpha_ce = 2.0, 0.3, 0.7
    kl = sum(_kl_by_hand(t, s, T) for t, s in zip(teacher, student, strict=True)) / len(student)
    task = 0.0
    for row, y in zip(student, labels, strict=True):
        task -= math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
    task /= len(student)
    expected = alpha_task * task + alpha_ce * T**2 * kl

    loss_fn = FinetuneLoss(alpha_task=alpha_task, alpha_ce=alpha_ce, temperature=T)
    total, parts = loss_fn(torch.tensor(student), torch.tensor(labels), torch.tensor(teacher))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert parts["task"] == pytest.approx(task, rel=1e-6)
    assert parts["ce"] == pytest.approx(T**2 * kl, rel=1e-6)


def test_without_teacher_the_loss_is_plain_cross_entropy_and_gradients_flow():
    logits = torch.tensor([[0.2, 0.9], [1.5, -0.3]], requires_grad=True)
    labels = torch.tensor([1, 0])
    total, parts = FinetuneLoss()(logits, labels)
    assert total.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert set(parts) == {"task"}
    total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"alpha_ce": -1.0}, "distillation.alpha_ce"),
        ({"alpha_task": float("nan")}, "distillation.alpha_task"),
        ({"alpha_task": 0.0, "alpha_ce": 0.0}, "distillation.alpha_task"),
        ({"alpha_ce": 1.0, "temperature": 0.0}, "distillation.T"),
    ],
)
def test_bad_loss_weights_raise_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        FinetuneLoss(**kwargs)
    assert info.value.key == key
