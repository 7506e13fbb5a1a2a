"""Export the student from a DeepSpeed checkpoint into a Hugging Face model folder (``DistilBertForMaskedLM``,
``GPT2LMHeadModel``, ...: the LM class of the student config's family).

The weights are the fp32 master weights of the ZeRO checkpoint (``get_fp32_state_dict_from_zero_checkpoint``),
so a bf16 or ZeRO-3 run exports the same numbers its optimizer holds. They are loaded into a fresh model, never
the engine's own module: under ZeRO-3 that one holds empty partitions. With a :class:`StudentCard` the folder
also gets its model card (``README.md``, :mod:`kd_plugin.export.model_card`). The folder is written whole or
not at all (:mod:`kd_plugin.export.target_folder`).
"""

from __future__ import annotations

from pathlib import Path

from transformers import PretrainedConfig, PreTrainedModel

from kd_plugin.export.model_card import StudentCard, write_model_card
from kd_plugin.export.target_folder import staged_folder
from kd_plugin.objectives import lm_auto_class

STUDENT_PREFIX = "student."  # the student's parameters inside the engine's module (DistillationModule)


def student_from_checkpoint(checkpoint_dir: str | Path, tag: str | None, student_config: PretrainedConfig
                            ) -> PreTrainedModel:
    """A fresh student model holding the fp32 master weights of checkpoint ``tag`` (None = the latest)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    full = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    student_state = {k[len(STUDENT_PREFIX):]: v for k, v in full.items() if k.startswith(STUDENT_PREFIX)}
    model = lm_auto_class(student_config).from_config(student_config)
    model.load_state_dict(student_state, strict=True)
    return model.eval()


def save_student(model: PreTrainedModel, tokenizer, folder: str | Path, card: StudentCard | None = None) -> None:
    """Config, weights, tokenizer (when given) and model card (when given) into ``folder`` (a staging folder)."""
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if card is not None:
        write_model_card(folder, card)


def export_student(checkpoint_dir: str | Path, tag: str | None, student_config: PretrainedConfig, tokenizer,
                   target: str | Path, card: StudentCard | None = None) -> PreTrainedModel:
    """Write ``target`` (config, weights, tokenizer, and the model card when ``card`` is given) from checkpoint
    ``tag`` (None = the latest), all or nothing (:func:`kd_plugin.export.target_folder.staged_folder`: a
    failure leaves ``target`` as it was); return the model."""
    model = student_from_checkpoint(checkpoint_dir, tag, student_config)
    with staged_folder(target) as staging:
        save_student(model, tokenizer, staging, card)
    return model
