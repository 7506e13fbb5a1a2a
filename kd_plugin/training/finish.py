"""What a finished distillation leaves behind (rank 0): the exported student with its model card, and the
held-out masked-token accuracy of teacher and student, measured on the same fixed masks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from kd_plugin.evaluation.held_out import held_out_accuracy
from kd_plugin.export import export_student
from kd_plugin.export.model_card import StudentCard, write_model_card
from kd_plugin.training.callbacks import LogScalar


def export_and_evaluate(checkpoint_dir: Path, tag: str, models, held_out_split, card: StudentCard,
                        student_dir: Path, max_sequences: int | None, seed: int, step: int, tokens_seen: int,
                        log_scalar: LogScalar | None) -> dict[str, Any]:
    """Export the student of checkpoint ``tag``, score teacher and student, write the card; the scores."""
    student = export_student(checkpoint_dir, tag, models.module.student.config, models.tokenizer, student_dir)
    held_out = held_out_accuracy({"teacher": models.teacher, "student": student}, held_out_split, models.tokenizer,
                                 max_sequences, seed, step, log_scalar)
    write_model_card(student_dir, replace(card, steps=step, tokens_seen=tokens_seen, checkpoint=tag,
                                          held_out=held_out or None))
    return held_out
