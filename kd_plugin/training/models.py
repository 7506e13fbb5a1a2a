"""Teacher, student and loss mixture for one distillation config, ready for the engine.

The loss terms' needs decide how both models are built (:class:`kd_plugin.student.ModelRequirements`: fused
SDPA attention unless a term reads attention probabilities); the frozen teacher runs in the engine's 16-bit
type when there is one. ``performance.compile`` compiles both models' forward functions (the modules, their
parameter names and so the checkpoints stay as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from kd_plugin.config import DistillConfig
from kd_plugin.data.padding import set_pad_token
from kd_plugin.families import family_of, n_layers_of
from kd_plugin.families.family import freeze_position_embeddings
from kd_plugin.losses import LOSS_TERMS, LossMixture, ModelDims
from kd_plugin.objectives import OBJECTIVES, Objective
from kd_plugin.preparation import resolve_teacher
from kd_plugin.student import ModelRequirements, StudentSummary, build_student
from kd_plugin.student.dropout import set_dropout
from kd_plugin.student.requirements import apply_to_student
from kd_plugin.teacher_catalogue import TeacherSource, load_teacher
from kd_plugin.training.distillation_module import DistillationModule, freeze_teacher
from kd_plugin.training.divergence import check_finite_weights
from kd_plugin.training.phase_timer import PhaseTimer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Models:
    teacher: PreTrainedModel  # frozen, outside the engine
    tokenizer: Any
    teacher_source: TeacherSource
    student_summary: StudentSummary
    module: DistillationModule  # student + mixture: what the engine trains
    requirements: ModelRequirements
    objective: Objective  # the teacher's (and student's) objective: what the batches' targets are


def requirements_of(config: DistillConfig) -> ModelRequirements:
    needs = set().union(*(LOSS_TERMS.get(name).needs for name in config.loss.active))
    return ModelRequirements.of(needs, config.performance.attn_implementation)


def model_dims(student: PreTrainedModel, teacher: PreTrainedModel) -> ModelDims:
    # hidden_size, num_hidden_layers, num_attention_heads: transformers maps them onto every family's own names
    return ModelDims(
        student_hidden_size=student.config.hidden_size,
        teacher_hidden_size=teacher.config.hidden_size,
        student_layers=n_layers_of(student.config),
        teacher_layers=n_layers_of(teacher.config),
        student_heads=student.config.num_attention_heads,
        teacher_heads=teacher.config.num_attention_heads,
        objective=family_of(teacher.config).objective,
    )


def build_models(config: DistillConfig, timer: PhaseTimer | None = None) -> Models:
    requirements = requirements_of(config)
    source = resolve_teacher(config.teacher)
    teacher, tokenizer = load_teacher(source, seed=config.seed, attn_implementation=requirements.attn_implementation)
    check_finite_weights(teacher, "teacher", f"the teacher {config.teacher!r}")  # before any engine is built
    set_pad_token(tokenizer, config.data.pad_token, teacher)
    student, summary = build_student(teacher, config.student.layers, config.student.n_layers,
                                     fold_token_type_embedding=config.student.fold_token_type_embedding,
                                     seed=config.seed, requirements=requirements,
                                     architecture=config.student.architecture)
    if config.student.dropout is not None:
        set_dropout(student, config.student.dropout)
        apply_to_student(student, requirements)  # attention dropout stays off where a term compares attentions
    if config.student.freeze_position_embeddings:  # the original Distil* code's --freeze_pos_embs
        freeze_position_embeddings(student, family_of(student.config))
    mixture = LossMixture(config.loss, model_dims(student, teacher), config.performance.fuse_logit_rows)
    teacher = freeze_teacher(teacher, DTYPES[config.deepspeed.precision])
    student.train()
    if config.performance.compile:
        # Compile the forward functions, not the modules: parameter names (and checkpoints) stay unchanged.
        student.forward = torch.compile(student.forward)
        teacher.forward = torch.compile(teacher.forward)
    # Under ZeRO-3 the projection's weight is gathered only inside the head's own forward; fp16 logits keep the
    # per-term path (kd_plugin.losses.fused_logit_rows): both run the models' own heads.
    fuse_lm_head = (config.performance.fuse_lm_head and config.deepspeed.zero_stage < 3
                    and config.deepspeed.precision != "fp16")
    module = DistillationModule(student, mixture, teacher, config.performance.logit_chunk_rows, timer, fuse_lm_head)
    return Models(teacher, tokenizer, source, summary, module, requirements, OBJECTIVES.get(summary.objective))
