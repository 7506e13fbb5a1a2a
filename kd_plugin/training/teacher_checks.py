"""Checks that need the teacher's architecture but no weights: run once in the config hook, before compute.

Only the teacher's ``config.json`` is read (a prepared catalogue teacher has its base model's architecture,
:func:`kd_plugin.teacher_catalogue.architecture_source`, so checking it never triggers the preparation). Hub
ids cannot be read offline; they are checked after loading. Checked here: the layer selection against the
teacher's depth, and every loss term against both models' widths, depths and heads (layer pairs,
projections, options).
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, BertConfig, PretrainedConfig

import kd_plugin.preparation  # noqa: F401  (registers the prepared teachers in the catalogue)
from kd_plugin.config import DistillConfig
from kd_plugin.errors import ConfigError
from kd_plugin.losses import LossMixture, ModelDims
from kd_plugin.student.build import SUPPORTED_TEACHERS
from kd_plugin.student.layer_selection import resolve_n_layers, select_layers
from kd_plugin.teacher_catalogue import RANDOM_TINY_CONFIG, TEACHERS, architecture_source


def teacher_architecture(name: str) -> PretrainedConfig | None:
    """The teacher's model config (no weights), or None for a hub id (checked once downloaded)."""
    source = architecture_source(name)
    if source.name == "random-tiny":
        return BertConfig(**RANDOM_TINY_CONFIG)
    if name in TEACHERS or Path(source.path).expanduser().is_dir():
        try:
            return AutoConfig.from_pretrained(source.path)
        except (OSError, ValueError) as err:
            raise ConfigError("teacher", f"cannot read the model config in {source.path}: {err}",
                              "a model directory") from None
    return None


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_teacher_directory(name: str, teacher: PretrainedConfig) -> None:
    """A BERT-family masked LM with weights: what the student builder can copy from."""
    if teacher.model_type not in SUPPORTED_TEACHERS:
        raise ConfigError("teacher", f"{name!r} is a {teacher.model_type!r} model, not a BERT-family masked LM",
                          f"a masked-LM directory of model type {', '.join(SUPPORTED_TEACHERS)}")
    source = architecture_source(name)
    directory = Path(source.path).expanduser()
    if name not in TEACHERS and directory.is_dir() and not any((directory / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError("teacher", f"{str(directory)!r} has a config.json but no weights",
                          f"a model directory with one of {', '.join(WEIGHT_FILES)}")


def check_against_teacher(config: DistillConfig) -> None:
    teacher = teacher_architecture(config.teacher)
    if teacher is None:
        return
    check_teacher_directory(config.teacher, teacher)
    n_teacher = teacher.num_hidden_layers
    copied = select_layers(config.student.layers, config.student.n_layers, n_teacher)
    n_student = len(copied) if copied else resolve_n_layers(config.student.n_layers, n_teacher)
    dims = ModelDims(
        student_hidden_size=teacher.hidden_size,  # DistilBERT students keep the teacher's width
        teacher_hidden_size=teacher.hidden_size,
        student_layers=n_student,
        teacher_layers=n_teacher,
        student_heads=teacher.num_attention_heads,
        teacher_heads=teacher.num_attention_heads,
    )
    LossMixture(config.loss, dims)  # layer pairs, projections, options
