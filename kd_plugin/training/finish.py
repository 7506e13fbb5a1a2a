"""What a finished distillation leaves behind (rank 0): the exported student with its model card, and the
held-out masked-token accuracy of teacher and student, measured on the same fixed masks.

The student folder appears whole or not at all: weights, tokenizer and the card (with the scores) are written
into a staging folder that is moved into ``student/`` only once complete (:mod:`kd_plugin.export.target_folder`;
a resumed run replaces the earlier ``student/`` the same way). A failure (a full disk, a crash in the
evaluation, a signal) leaves no half-written folder that would load as a model; the run then fails (Sacred
records it FAILED, or INTERRUPTED for a signal) and the final checkpoint, already written, can be exported with
``python -m kd_plugin.export``.
"""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path
from typing import Any

from kd_plugin.evaluation.held_out import held_out_accuracy
from kd_plugin.export.model_card import StudentCard, write_model_card
from kd_plugin.export.student import save_student, student_from_checkpoint
from kd_plugin.export.target_folder import staged_folder
from kd_plugin.training.callbacks import LogScalar
from kd_plugin.training.disk_space import free_bytes, human, is_out_of_space


class StudentExportError(OSError):
    """The final export could not be written; ``student/`` is as it was before and the checkpoint is intact."""


def export_and_evaluate(checkpoint_dir: Path, tag: str, models, held_out_split, card: StudentCard,
                        student_dir: Path, max_sequences: int | None, seed: int, step: int, tokens_seen: int,
                        log_scalar: LogScalar | None, progress: bool | None = None) -> dict[str, Any]:
    """Export the student of checkpoint ``tag``, score teacher and student (``progress``: a bar, plain lines or
    nothing over the held-out batches), write the card; the scores."""
    student = student_from_checkpoint(checkpoint_dir, tag, models.module.student.config)
    try:
        with staged_folder(student_dir) as staging:
            save_student(student, models.tokenizer, staging)
            held_out = held_out_accuracy({"teacher": models.teacher, "student": student}, held_out_split,
                                         models.tokenizer, max_sequences, seed, step, log_scalar,
                                         objective=models.objective.name, progress=progress)
            write_model_card(staging, replace(card, steps=step, tokens_seen=tokens_seen, checkpoint=tag,
                                              held_out=held_out or None))
    except Exception as err:  # safetensors reports a full disk as its own SafetensorError
        if not (isinstance(err, OSError) or is_out_of_space(err)):
            raise
        reason = (f"no space left on {student_dir.parent} ({human(free_bytes(student_dir.parent))} free)"
                  if is_out_of_space(err) else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        raise StudentExportError(errno.ENOSPC if is_out_of_space(err) else getattr(err, "errno", None) or errno.EIO,
                                 f"cannot write the student to {student_dir}: {reason}; no half-written folder was "
                                 f"left; the checkpoint {checkpoint_dir / tag} is intact: python -m kd_plugin.export "
                                 f"{checkpoint_dir} <folder> --tag {tag}") from err
    return held_out
