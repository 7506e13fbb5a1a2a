"""``student.architecture=same``: the teacher's own class with fewer blocks, initialised from chosen blocks.

This is how the original Distil* code built DistilRoBERTa (a 6-layer ``RobertaForMaskedLM``) and DistilGPT2 (a
6-layer ``GPT2LMHeadModel``), and how decoder LMs (Llama, Qwen2, ...) are usually shrunk. With the teacher's
family adapter (:mod:`kd_plugin.families`) naming where the blocks live, the copy is one renaming of the
teacher's state dict::

    <layers>.<t>.<rest>   ->   <layers>.<s>.<rest>     for student block s = the s-th selected teacher block t
    anything else         ->   the same name            embeddings, final norm, LM head (tied weights stay tied)

The student's config is the teacher's with ``num_hidden_layers`` (``n_layer`` for GPT-2) set to the new depth
and every per-layer list (``layer_types``) cut to the selected blocks, so the student computes exactly the
teacher's sub-network made of those blocks (for the blocks kept, bit for bit; tested).
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import PreTrainedModel

from kd_plugin.families import ModelFamily, family_of, n_layers_of


def same_architecture_config(teacher: PreTrainedModel, family: ModelFamily, layers: list[int], depth: int):
    """The teacher's config with ``depth`` blocks; per-layer lists follow the copied blocks (or the first
    ``depth`` entries when nothing is copied)."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = depth
    for key in family.per_layer_config:
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)) and len(values) == n_layers_of(teacher.config):
            setattr(config, key, [values[i] for i in (layers or range(depth))])
    return config


def student_state_from_teacher(teacher: PreTrainedModel, family: ModelFamily, layers: list[int],
                               student_keys: list[str]) -> dict[str, torch.Tensor]:
    """The student's state dict, every entry taken from the teacher (see the module docstring)."""
    teacher_state = teacher.state_dict()
    block = re.compile(rf"^{re.escape(family.layers)}\.(\d+)\.(.+)$")
    state = {}
    for key in student_keys:
        match = block.match(key)
        source = f"{family.layers}.{layers[int(match.group(1))]}.{match.group(2)}" if match else key
        if not match and not key.startswith(family.non_layer_parts()):
            raise RuntimeError(f"the {family.name} adapter does not declare the student parameter {key!r} "
                               f"(embeddings {family.embeddings}, final norm {family.final_norm}, head {family.lm_head})")
        state[key] = teacher_state[source]
    return state


def build_same_architecture(teacher: PreTrainedModel, layers: list[int], depth: int, seed: int | None,
                            fold_token_type_embedding: bool) -> PreTrainedModel:
    """A ``type(teacher)`` student of ``depth`` blocks: copied from teacher blocks ``layers`` (with embeddings,
    final norm and LM head), or freshly initialised when ``layers`` is empty (``random_init``).
    ``fold_token_type_embedding`` does not apply: the student keeps the teacher's token-type embeddings."""
    family = family_of(teacher.config)
    config = same_architecture_config(teacher, family, layers, depth)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        student = type(teacher)(config)
    student.to(device=teacher.device, dtype=teacher.dtype)
    if layers:
        keys = list(student.state_dict())
        student.load_state_dict(student_state_from_teacher(teacher, family, layers, keys), strict=True)
    return student
