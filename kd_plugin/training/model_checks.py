"""Checks that need the teacher's architecture but no weights: run in the config hook, before any compute.

Only the teacher's ``config.json`` is read (a prepared catalogue teacher has its base model's architecture, so
checking it never triggers the preparation). Hub ids cannot be read offline; they are checked after loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import AutoConfig, BertConfig, PretrainedConfig

from kd_plugin.errors import ConfigError
from kd_plugin.losses import LossMixture, ModelDims
from kd_plugin.student.layer_selection import resolve_n_layers, select_layers
from kd_plugin.teacher_catalogue import RANDOM_TINY_CONFIG, TEACHERS, resolve_teacher
from kd_plugin.training.run_config import validate_mixture


def teacher_architecture(name: str) -> PretrainedConfig | None:
    from kd_plugin.preparation.recipes import PREPARED_TEACHERS

    name = PREPARED_TEACHERS.get(name, name)
    if name == "random-tiny":
        return BertConfig(**RANDOM_TINY_CONFIG)
    if name in TEACHERS or Path(name).expanduser().is_dir():
        path = resolve_teacher(name).path
        try:
            return AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ConfigError("teacher", f"cannot read the model config in {path}: {err}", "a model directory") from None
    resolve_teacher(name)  # rejects a path that does not exist
    return None  # a hub id: checked once downloaded


def check_against_teacher(cfg: Mapping[str, Any]) -> None:
    teacher = teacher_architecture(cfg["teacher"])
    if teacher is None:
        return
    student = cfg["student"]
    n_teacher = teacher.num_hidden_layers
    copied = select_layers(student["layers"], student["n_layers"], n_teacher)
    n_student = len(copied) if copied else resolve_n_layers(student["n_layers"], n_teacher)
    dims = ModelDims(
        student_hidden_size=teacher.hidden_size,  # DistilBERT students keep the teacher's width
        teacher_hidden_size=teacher.hidden_size,
        student_layers=n_student,
        teacher_layers=n_teacher,
        student_heads=teacher.num_attention_heads,
        teacher_heads=teacher.num_attention_heads,
    )
    validate_mixture(cfg, lambda declaration: LossMixture(declaration, dims))  # layer pairs, projections, options
