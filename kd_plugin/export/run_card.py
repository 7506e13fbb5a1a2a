"""The model card's data of a distillation run, from the pieces the trainer holds: its typed config, the
engine summary (``info["engine"]``) and the student summary (``info["student_summary"]``).

    card = run_card(config, info["engine"], info["student_summary"], teacher_n_layers=..., run_id=..., database=...)

Built once at set-up (``steps`` 0) and stored in every checkpoint; the export completes it with the checkpoint's
own step and token count and, at the end of a run, with the held-out scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from kd_plugin.export.model_card import StudentCard
from kd_plugin.teacher_catalogue import provenance_of

if TYPE_CHECKING:
    from kd_plugin.config import DistillConfig


def run_card(config: DistillConfig, engine: Mapping[str, Any], student: Mapping[str, Any], *,
             teacher_n_layers: int | None = None, run_id: Any = None, database: str | None = None,
             steps: int = 0, tokens_seen: int = 0, held_out: dict | None = None) -> StudentCard:
    """``config``: the run's :class:`DistillConfig`; ``engine``: ``Engine.summary(...)``; ``student``:
    ``StudentSummary.to_dict()``; ``database``: where the run is saved (``<url>/<db name>``; masked here)."""
    layers = config.student.layers
    provenance = provenance_of(config.teacher)
    return StudentCard(
        teacher=config.teacher, corpus=config.data.corpus, license=provenance.license,
        base_model=provenance.hub_id, teacher_upstream=provenance.upstream,
        temperature=float(config.loss.temperature), loss_weights=dict(config.loss.active),
        layer_strategy=layers if isinstance(layers, str) else student.get("strategy"),
        teacher_layers_copied=list(student["teacher_layers_copied"]), n_layers=int(student["n_layers"]),
        teacher_n_layers=teacher_n_layers,
        masking=asdict(config.masking), max_seq_length=config.data.max_seq_length,
        micro_batch_size=int(engine["micro_batch_size"]),
        gradient_accumulation_steps=int(engine["gradient_accumulation_steps"]),
        world_size=int(engine["world_size"]), steps=steps, total_steps=int(engine["total_steps"]),
        tokens_seen=tokens_seen, zero_stage=int(engine["zero_stage"]), precision=str(engine["precision"]),
        n_parameters=int(student["n_parameters"]),
        n_non_embedding_parameters=int(student["n_non_embedding_parameters"]),
        teacher_n_parameters=int(student["teacher_n_parameters"]),
        model_class=str(student.get("model_class") or "DistilBertForMaskedLM"),
        objective=str(student.get("objective") or "masked_lm"),
        run_id=run_id, database=database, held_out=held_out or None,
    )
