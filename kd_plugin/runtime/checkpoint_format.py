"""The distillation checkpoint format, in one place: the folder layout, how a checkpoint folder is found, the
``kd_*`` keys of its client state, and what a resume must match.

Written by the trainer (:mod:`kd_plugin.training.checkpointing`), checked before a resume
(:mod:`kd_plugin.training.resume_checks`) and read by ``python -m kd_plugin.export``
(:mod:`kd_plugin.export.checkpoint_state`)::

    <output_dir>/checkpoints/
        latest                   DeepSpeed's file: the newest tag
        step00000150/            one DeepSpeed tag per checkpoint, written after optimizer step 150 (STEP_TAG)
            mp_rank_00_model_states.pt              rank 0's model states + the client state (ZeRO 1-2;
            zero_pp_rank_0_mp_rank_00_model_states.pt   ZeRO 3)
            zero_pp_rank_<r>_mp_rank_00_optim_states.pt one per data-parallel rank
        tokenizer/               the teacher's tokenizer, saved once (what the export gives the student)

The client state (DeepSpeed keeps it beside ``module`` in rank 0's model-states file)::

    kd_step, kd_sampler, kd_rng,     the loop's position: optimizer step, sampler state, every rank's RNG
    kd_tokens_seen, kd_plan,         states, real tokens so far, the batch plan a resume must match
    kd_run_id                        (RESUME_PLAN_KEYS), the run that wrote it; only these: export format 1
    kd_export_format                 EXPORT_FORMAT (2): the three keys below are present
    kd_student_config                the student's config.to_dict()
    kd_tokenizer                     the tokenizer's folder, relative to the checkpoints folder (or absolute)
    kd_card                          the model card's data (kd_plugin.export.model_card.StudentCard)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kd_plugin.errors import ConfigError

# ------------------------------------------------------------------------------------------------ the layout
CHECKPOINTS = "checkpoints"  # <output_dir>/checkpoints
LATEST = "latest"  # the file DeepSpeed writes the newest tag into
STEP_TAG = "step{:08d}"  # the tag (sub-folder) of the checkpoint written after optimizer step N
STEP_DIR = re.compile(r"^step(\d+)$")  # a tag folder's name, the step in group 1
TOKENIZER_DIR = "tokenizer"  # <checkpoints>/tokenizer, beside the tags
MODEL_STATES_FILES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")  # ZeRO 1-2, 3
OPTIMIZER_STATES = "zero_pp_rank_*_mp_rank_00_optim_states.pt"  # one per data-parallel rank (ZeRO 1-3)

# ------------------------------------------------------------------------------------- the client-state keys
STEP_KEY = "kd_step"
SAMPLER_KEY = "kd_sampler"
RNG_KEY = "kd_rng"
TOKENS_SEEN_KEY = "kd_tokens_seen"
PLAN_KEY = "kd_plan"
RUN_ID_KEY = "kd_run_id"
EXPORT_FORMAT_KEY = "kd_export_format"
EXPORT_FORMAT = 2
STUDENT_CONFIG_KEY = "kd_student_config"
TOKENIZER_KEY = "kd_tokenizer"
CARD_KEY = "kd_card"


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / LATEST).is_file()


def checkpoint_folders(path: str | Path) -> tuple[Path, Path]:
    """Where a checkpoints folder may be, given a path a user typed: the path itself, or ``<path>/checkpoints``."""
    path = Path(path)
    return path, path / CHECKPOINTS


def find_checkpoint_dir(path: str | Path) -> Path:
    """``resume=``: accept ``<output_dir>/checkpoints`` or ``<output_dir>`` itself; refuse a folder without one."""
    for candidate in checkpoint_folders(path):
        if has_checkpoint(candidate):
            return candidate
    raise ConfigError("resume", f"no DeepSpeed checkpoint in {str(path)!r} (no '{LATEST}' file there or in "
                      f"its {CHECKPOINTS}/ folder)", f"<output_dir>/{CHECKPOINTS} of an earlier run, or that <output_dir>")


def check_compatible(saved_plan: dict[str, Any], current_plan: dict[str, Any]) -> None:
    """What a resume must match: every key of the batch plan both have (world size, micro-batch, accumulation,
    seed, schedule, corpus), so the resumed run continues the same schedule on the same data order."""
    for key, value in current_plan.items():
        if key in saved_plan and saved_plan[key] != value:
            raise ConfigError("resume", f"the checkpoint was written with {key}={saved_plan[key]!r}, this run has "
                              f"{key}={value!r}", f"the checkpoint's {key} (resume with the same configuration)")
