"""What a distillation checkpoint carries for its export, besides the weights: the student's config, its
tokenizer and the model card's data, so ``python -m kd_plugin.export`` needs nothing but the checkpoint folder.

DeepSpeed stores ``engine.save_checkpoint(..., client_state=...)`` at the top level of rank 0's model-states
file, ``<checkpoints>/<tag>/mp_rank_00_model_states.pt`` (ZeRO 1 and 2) or
``<checkpoints>/<tag>/zero_pp_rank_0_mp_rank_00_model_states.pt`` (ZeRO 3), next to ``module``, ``ds_config``
and ``ds_version``. It is read here with ``torch.load`` alone (memory-mapped, no engine, no process group).

The layout and every ``kd_*`` key are declared in :mod:`kd_plugin.runtime.checkpoint_format`; the export's own
keys are written here (:func:`export_client_state`) and read back (:func:`read_checkpoint`): the student's
config, the tokenizer's folder (relative to the checkpoints folder, saved there once by :func:`save_tokenizer`,
so the folder can move) and the card's data, whose steps, tokens seen, run id and batch plan are taken from the
checkpoint's own resumption keys when it is read. A checkpoint with only those is *export format 1*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kd_plugin.export.model_card import StudentCard
from kd_plugin.objectives import config_from_dict
from kd_plugin.runtime.checkpoint_format import (  # noqa: F401  (MODEL_STATES_FILES: read by the export's users)
    CARD_KEY,
    EXPORT_FORMAT,
    LATEST,
    MODEL_STATES_FILES,
    PLAN_KEY,
    RUN_ID_KEY,
    STEP_KEY,
    STUDENT_CONFIG_KEY,
    TOKENIZER_DIR,
    TOKENIZER_KEY,
    TOKENS_SEEN_KEY,
    checkpoint_folders,
)
from kd_plugin.runtime.checkpoint_format import EXPORT_FORMAT_KEY as FORMAT_KEY


class CheckpointError(Exception):
    """A checkpoint that cannot be exported, in one line that says what to do."""


# ------------------------------------------------------------------------------------------- writing (trainer)
def save_tokenizer(tokenizer, checkpoint_dir: str | Path) -> str:
    """Save the tokenizer into ``<checkpoint_dir>/tokenizer`` (once; on rank 0) and return what to store as
    ``kd_tokenizer``: the folder's name relative to ``checkpoint_dir``."""
    target = Path(checkpoint_dir) / TOKENIZER_DIR
    if not (target / "tokenizer_config.json").is_file():
        tokenizer.save_pretrained(target)
    return TOKENIZER_DIR


def export_client_state(student_config, tokenizer_ref: str, card: StudentCard | None = None) -> dict[str, Any]:
    """The export's share of a checkpoint's ``client_state`` (merge it into the trainer's own keys)."""
    return {FORMAT_KEY: EXPORT_FORMAT, STUDENT_CONFIG_KEY: student_config.to_dict(), TOKENIZER_KEY: tokenizer_ref,
            CARD_KEY: None if card is None else card.to_client_state()}


# ------------------------------------------------------------------------------------------- reading (export)
def find_checkpoint(path: str | Path, tag: str | None = None) -> tuple[Path, str]:
    """``(checkpoints folder, tag)``: ``path`` is the checkpoints folder or the run's output folder holding
    ``checkpoints/``; ``tag`` None = the one ``latest`` names."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no such folder: {path}")
    candidates = checkpoint_folders(path)
    for folder in candidates:
        if tag is not None and (folder / tag).is_dir():
            return folder, tag
        if tag is None and (folder / LATEST).is_file():
            return folder, (folder / LATEST).read_text().strip()
    if tag is not None:
        found = sorted(p.name for folder in candidates if folder.is_dir() for p in folder.iterdir()
                       if any((p / name).is_file() for name in MODEL_STATES_FILES))
        raise CheckpointError(f"no checkpoint tag {tag!r} in {path}; tags there: {', '.join(found) or 'none'}")
    raise CheckpointError(f"no DeepSpeed checkpoint in {path}: no '{LATEST}' file there or in its checkpoints/ "
                          "folder (give the run's checkpoints folder, or --tag <tag>)")


def model_states_file(checkpoint_dir: Path, tag: str) -> Path:
    for name in MODEL_STATES_FILES:
        if (checkpoint_dir / tag / name).is_file():
            return checkpoint_dir / tag / name
    raise CheckpointError(f"{checkpoint_dir / tag} holds no model-states file ({' or '.join(MODEL_STATES_FILES)}): "
                          "not a DeepSpeed checkpoint, or an incomplete one")


def load_client_state(checkpoint_dir: Path, tag: str) -> dict[str, Any]:
    """Rank 0's model-states file without the weights: ``client_state`` plus DeepSpeed's own top-level keys."""
    import torch

    path = model_states_file(checkpoint_dir, tag)
    try:  # weights_only=False: the resumption keys hold numpy RNG states; the file is the user's own run
        states = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    return {key: value for key, value in states.items() if key != "module"}


def zero_stage(client: dict[str, Any]) -> int | None:
    return ((client.get("ds_config") or {}).get("zero_optimization") or {}).get("stage")


def check_export_format(client: dict[str, Any], where: str) -> None:
    """Say which writer a checkpoint comes from when it lacks the export keys (and what to pass instead)."""
    written = client.get(FORMAT_KEY)
    if written is not None and written > EXPORT_FORMAT:
        raise CheckpointError(f"{where} has export format {written}, written by a newer kd_plugin (this one reads "
                              f"up to {EXPORT_FORMAT}): export it with that version")
    if STUDENT_CONFIG_KEY in client and TOKENIZER_KEY in client:
        return
    if STEP_KEY in client:
        raise CheckpointError(f"{where} was written by a kd_plugin trainer of export format 1 (resumption keys only, "
                              f"no {STUDENT_CONFIG_KEY} / {TOKENIZER_KEY}): pass --student-config and --tokenizer, "
                              "e.g. both = the run's student/ folder or its teacher's folder")
    raise CheckpointError(f"{where} is not a kd_plugin distillation checkpoint (no kd_* keys in its client state; "
                          f"written by DeepSpeed {client.get('ds_version', '?')})")


def card_from_client_state(client: dict[str, Any], tag: str) -> StudentCard | None:
    """The stored card, updated with what this checkpoint itself records (steps, tokens, run id, batch plan)."""
    stored = client.get(CARD_KEY)
    if not isinstance(stored, dict):
        return None
    card = StudentCard.from_client_state(stored)
    plan = client.get(PLAN_KEY) or {}
    changes: dict[str, Any] = {"checkpoint": tag}
    for field, key in (("steps", STEP_KEY), ("tokens_seen", TOKENS_SEEN_KEY), ("run_id", RUN_ID_KEY)):
        if client.get(key) is not None:
            changes[field] = client[key]
    for field in ("micro_batch_size", "gradient_accumulation_steps", "world_size", "total_steps"):
        if plan.get(field) is not None:
            changes[field] = plan[field]
    return replace(card, **changes)


@dataclass
class CheckpointExport:
    """Everything needed to write the Hugging Face folder of one checkpoint."""

    checkpoint_dir: Path
    tag: str
    zero_stage: int | None
    student_config: Any  # the student's PretrainedConfig (DistilBertConfig, GPT2Config, ...)
    tokenizer_dir: Path
    card: StudentCard | None


def _student_config(source: dict[str, Any] | str | Path):
    """The student's config, of the class its ``model_type`` names (DistilBERT, GPT-2, ...); checkpoints of
    export format 2 before model families stored a DistilBertConfig, which says so itself."""
    if isinstance(source, dict):
        return config_from_dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CheckpointError(f"--student-config: no config file {path}")
    try:
        return config_from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"--student-config: {path} is not a model config ({type(exc).__name__}: {exc})") from None


def read_checkpoint(path: str | Path, tag: str | None = None, student_config: str | Path | None = None,
                    tokenizer: str | Path | None = None) -> CheckpointExport:
    """Find the checkpoint and what its export needs; ``student_config`` / ``tokenizer`` (a config.json or a
    folder holding one; a tokenizer folder) stand in for a checkpoint that does not store them (format 1)."""
    checkpoint_dir, tag = find_checkpoint(path, tag)
    client = load_client_state(checkpoint_dir, tag)
    where = f"checkpoint {checkpoint_dir / tag}"
    if student_config is None or tokenizer is None:
        check_export_format(client, where)
    config = _student_config(student_config if student_config is not None else client[STUDENT_CONFIG_KEY])
    tokenizer_dir = Path(tokenizer if tokenizer is not None else client[TOKENIZER_KEY])
    if not tokenizer_dir.is_absolute() and tokenizer is None:
        tokenizer_dir = checkpoint_dir / tokenizer_dir
    if not tokenizer_dir.is_dir():
        option = "--tokenizer" if tokenizer is not None else f"{TOKENIZER_KEY} of the {where}"
        raise CheckpointError(f"{option}: no tokenizer folder {tokenizer_dir} (pass --tokenizer <folder>)")
    return CheckpointExport(checkpoint_dir, tag, zero_stage(client), config, tokenizer_dir,
                            card_from_client_state(client, tag))
