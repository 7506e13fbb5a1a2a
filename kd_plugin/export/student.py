"""Export the student from a DeepSpeed checkpoint into a Hugging Face ``DistilBertForMaskedLM`` folder.

The weights are the fp32 master weights of the ZeRO checkpoint (``get_fp32_state_dict_from_zero_checkpoint``),
so a bf16 or ZeRO-3 run exports the same numbers its optimizer holds. They are loaded into a fresh model, never
the engine's own module: under ZeRO-3 that one holds empty partitions. With a :class:`StudentCard` the folder
also gets its model card (``README.md``, :mod:`kd_plugin.export.model_card`).
"""

from __future__ import annotations

from pathlib import Path

from transformers import DistilBertConfig, DistilBertForMaskedLM

from kd_plugin.export.model_card import StudentCard, write_model_card

STUDENT_PREFIX = "student."  # the student's parameters inside the engine's module (DistillationModule)


def export_student(checkpoint_dir: str | Path, tag: str | None, student_config: DistilBertConfig, tokenizer,
                   target: str | Path, card: StudentCard | None = None) -> DistilBertForMaskedLM:
    """Write ``target`` (config, weights, tokenizer, and the model card when ``card`` is given) from checkpoint
    ``tag`` (None = the latest); return the model."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    full = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    student_state = {k[len(STUDENT_PREFIX):]: v for k, v in full.items() if k.startswith(STUDENT_PREFIX)}
    model = DistilBertForMaskedLM(student_config)
    model.load_state_dict(student_state, strict=True)
    model.save_pretrained(target)
    if tokenizer is not None:
        tokenizer.save_pretrained(target)
    if card is not None:
        write_model_card(target, card)
    return model.eval()
