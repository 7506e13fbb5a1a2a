"""``resume=``: checked in the config hook, before any model, data or engine exists.

Otherwise a checkpoint that cannot be resumed is found only inside ``engine.load_checkpoint``, after the models
were built and the corpus tokenized, as a raw traceback: a truncated or garbage ``*_model_states.pt`` /
``*_optim_states.pt``, a ``latest`` that names a missing tag, a student of another depth, another ZeRO stage, a
different number of processes. A student of the same shapes (other teacher layers, another teacher of the
same size) even loads, and the run's record and model card then describe a student that was never trained.

Read here without an engine or a process group: rank 0's model-states file with ``torch.load`` (the client
state, :func:`kd_plugin.export.checkpoint_state.load_client_state`), and every ``.pt`` file of the tag opened
as the zip archive ``torch.save`` writes (its central directory is at the end, so a truncated file fails at
once). Compared with this run: the teacher, the student (type, depth, copied teacher layers), the ZeRO stage,
the number of processes and what :func:`kd_plugin.training.assembly.resume_plan` fixes that is known before
the data is read (batch plan, seed, schedule, lr). The corpus cache key needs the tokenized corpus: it is
still compared when the checkpoint is loaded (:func:`kd_plugin.training.checkpointing.load`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from kd_plugin.config import BatchPlan, DistillConfig
from kd_plugin.errors import ConfigError
from kd_plugin.export.checkpoint_state import (
    CheckpointError,
    load_client_state,
    model_states_file,
    zero_stage,
)
from kd_plugin.families import n_layers_of
from kd_plugin.runtime.checkpoint_format import (
    CARD_KEY,
    LATEST,
    OPTIMIZER_STATES,
    PLAN_KEY,
    STUDENT_CONFIG_KEY,
    check_compatible,
)
from kd_plugin.student.layer_selection import resolve_n_layers, select_layers
from kd_plugin.training.teacher_checks import teacher_architecture

KEY = "resume"


def early_resume_plan(config: DistillConfig, plan: BatchPlan) -> dict[str, Any]:
    """The keys of ``resume_plan`` that do not need the data (``total_steps`` only when ``max_steps`` fixes it)."""
    early = {"world_size": plan.world_size, "micro_batch_size": plan.micro_batch_size,
             "gradient_accumulation_steps": plan.gradient_accumulation_steps, "seed": config.seed,
             "lr": config.optim.lr, "warmup_proportion": config.optim.warmup_proportion}
    if config.run.max_steps is not None:
        early.update(total_steps=config.run.max_steps, schedule_length=config.optim.schedule_length(config.run.max_steps))
    return early


def check_resume(config: DistillConfig, plan: BatchPlan) -> None:
    """Refuse, as ``resume: ...``, a checkpoint this run cannot continue."""
    checkpoint_dir = config.run.resume
    if checkpoint_dir is None:
        return
    client, tag_dir = _read(checkpoint_dir)
    saved_plan = client.get(PLAN_KEY) or {}
    if saved_plan.get("world_size") not in (None, plan.world_size):
        raise ConfigError(KEY, f"{tag_dir} was written by {_processes(saved_plan['world_size'])}, this run has "
                          f"{plan.world_size}", f"launch {_processes(saved_plan['world_size'])} to resume it "
                          "(ZeRO shards the optimizer state per process)")
    shards = sorted(tag_dir.glob(OPTIMIZER_STATES))
    if saved_plan.get("world_size") is not None and len(shards) != saved_plan["world_size"]:
        raise ConfigError(KEY, f"{tag_dir} holds {len(shards)} optimizer-state files for {saved_plan['world_size']} "
                          "processes (an incomplete checkpoint)", "a complete checkpoint")
    stage = zero_stage(client)
    if stage is not None and (stage == 3) != (config.deepspeed.zero_stage == 3):  # 1 and 2 share one format
        raise ConfigError(KEY, f"{tag_dir} was written with ZeRO stage {stage}, this run's deepspeed_config "
                          f"{config.deepspeed.path} has stage {config.deepspeed.zero_stage}",
                          f"a deepspeed_config with ZeRO stage {'3' if stage == 3 else '1 or 2'}")
    _check_student(config, client, tag_dir)
    _check_data(config, client, tag_dir)
    check_compatible(saved_plan, early_resume_plan(config, plan))


def _read(checkpoint_dir: Path) -> tuple[dict[str, Any], Path]:
    tag = (checkpoint_dir / LATEST).read_text().strip()
    tags = sorted(p.name for p in checkpoint_dir.iterdir() if p.is_dir() and p.name != "tokenizer")
    try:
        model_states_file(checkpoint_dir, tag)
    except CheckpointError:
        raise ConfigError(KEY, f"{checkpoint_dir / LATEST} names the checkpoint {tag!r}, which is missing or holds no "
                          "model-states file", f"a complete checkpoint: write one of the tags there "
                          f"({', '.join(tags) or 'none'}) into {checkpoint_dir / LATEST}") from None
    allowed = f"a complete checkpoint (tags in {checkpoint_dir}: {', '.join(tags)}; the tag in {LATEST} is resumed)"
    for path in sorted((checkpoint_dir / tag).glob("*.pt")):  # every file DeepSpeed will load
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError) as err:
            raise ConfigError(KEY, f"{path} is damaged: not a complete torch archive ({err})", allowed) from None
    try:
        return load_client_state(checkpoint_dir, tag), checkpoint_dir / tag
    except CheckpointError as err:
        raise ConfigError(KEY, f"{err} (a damaged or incomplete checkpoint)", allowed) from None


def _check_student(config: DistillConfig, client: dict[str, Any], tag_dir: Path) -> None:
    """The same teacher and the same student as the checkpoint's (what its model card records)."""
    card = client.get(CARD_KEY) or {}
    saved_teacher = card.get("teacher")
    if saved_teacher is not None and not _same(saved_teacher, config.teacher):
        raise ConfigError(KEY, f"{tag_dir} distils the teacher {saved_teacher!r}, this run {config.teacher!r}",
                          f"teacher={saved_teacher}")
    teacher = teacher_architecture(config.teacher)
    if teacher is None or "teacher_layers_copied" not in card:
        return
    n_teacher = n_layers_of(teacher)
    copied = select_layers(config.student.layers, config.student.n_layers, n_teacher)
    n_student = len(copied) if copied else resolve_n_layers(config.student.n_layers, n_teacher)
    saved = {"n_layers": card.get("n_layers"), "teacher layers copied": list(card["teacher_layers_copied"])}
    ours = {"n_layers": n_student, "teacher layers copied": list(copied)}
    student_type = (client.get(STUDENT_CONFIG_KEY) or {}).get("model_type")
    if student_type is not None:
        saved["student model type"] = student_type
        ours["student model type"] = "distilbert" if config.student.architecture == "distilbert" else teacher.model_type
    for what, value in saved.items():
        if value != ours[what]:
            raise ConfigError(KEY, f"{tag_dir} holds a student with {what} {value}, this run's student.* gives "
                              f"{ours[what]}", "the student.* settings of the run that wrote the checkpoint "
                              f"(its student: {card.get('n_layers')} layers from teacher layers "
                              f"{card['teacher_layers_copied']}, strategy {card.get('layer_strategy')})")


def _check_data(config: DistillConfig, client: dict[str, Any], tag_dir: Path) -> None:
    """The same corpus and sequence length (the corpus cache key itself is compared once the corpus is read)."""
    card = client.get(CARD_KEY) or {}
    for key, saved, ours in (("data.corpus", card.get("corpus"), config.data.corpus),
                             ("data.max_seq_length", card.get("max_seq_length"), config.data.max_seq_length)):
        if saved is not None and not _same(saved, ours):
            raise ConfigError(KEY, f"{tag_dir} was trained with {key}={saved!r}, this run has {key}={ours!r}",
                              f"{key}={saved} (the data order is part of the checkpoint)")


def _same(saved: Any, current: Any) -> bool:
    """Equal, or two spellings of one existing file or folder (a teacher or corpus path)."""
    if saved == current:
        return True
    if not (isinstance(saved, str) and isinstance(current, str)):
        return False
    a, b = Path(saved).expanduser(), Path(current).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _processes(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"
