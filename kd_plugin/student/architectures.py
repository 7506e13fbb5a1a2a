"""What the student is: ``student.architecture`` names a builder registered here.

* ``distilbert``: a ``DistilBertForMaskedLM`` (the paper's student: no token types, no pooler), from a BERT or
  RoBERTa teacher (:mod:`kd_plugin.student.distilbert`);
* ``same``: the teacher's own class with fewer blocks, from a teacher of any family with an adapter
  (:mod:`kd_plugin.student.same_architecture`): DistilRoBERTa, DistilGPT2, a shallower Llama / Qwen2.

A builder is ``(teacher, layers, depth, seed, fold_token_type_embedding) -> student``; ``layers`` are the
teacher blocks to copy (empty: fresh weights). ``check`` refuses a teacher family the builder cannot use
(called before compute on the teacher's config alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PretrainedConfig, PreTrainedModel

from kd_plugin.errors import ConfigError
from kd_plugin.families import FAMILIES, family_of
from kd_plugin.registry import Registry
from kd_plugin.student.distilbert import SOURCE_FAMILIES, build_distilbert
from kd_plugin.student.same_architecture import build_same_architecture

ARCHITECTURE_KEY = "student.architecture"


@dataclass(frozen=True)
class StudentArchitecture:
    build: Callable[[PreTrainedModel, list[int], int, int | None, bool], PreTrainedModel]
    families: tuple[str, ...] | None  # teacher families it can be built from (None: every family)
    description: str


STUDENT_ARCHITECTURES: Registry[StudentArchitecture] = Registry("student architecture")
STUDENT_ARCHITECTURES.register("distilbert")(StudentArchitecture(
    build_distilbert, tuple(SOURCE_FAMILIES), "DistilBertForMaskedLM (no token types, no pooler)"))
STUDENT_ARCHITECTURES.register("same")(StudentArchitecture(
    build_same_architecture, None, "the teacher's own class with fewer blocks"))


def check_architecture(architecture: str, teacher: PretrainedConfig) -> StudentArchitecture:
    """The builder for ``architecture``, if it can be built from a teacher with this config."""
    builder = STUDENT_ARCHITECTURES.get(architecture, ARCHITECTURE_KEY)
    family = family_of(teacher)
    if builder.families is not None and family.name not in builder.families:
        from_families = ", ".join(builder.families)
        raise ConfigError(ARCHITECTURE_KEY, f"a {architecture} student cannot be built from a {family.name} "
                          f"teacher ({teacher.model_type}); it needs a {from_families} teacher",
                          "same (the teacher's own class with fewer blocks)")
    return builder


def architecture_names() -> list[str]:
    return STUDENT_ARCHITECTURES.names()


__all__ = ["ARCHITECTURE_KEY", "FAMILIES", "STUDENT_ARCHITECTURES", "check_architecture"]
