"""The teacher-preparation experiment's config, parsed once into frozen, validated blocks.

``PreparationConfig.from_dict(config)`` is called at the Sacred boundary (``experiments/prepare_teacher.py``'s
config hook, its ``where`` command and main function) and by :func:`kd_plugin.preparation.ensure_prepared` before
it starts a preparation; :func:`kd_plugin.preparation.mlm_training.prepare_teacher` and its training loop take
the typed object. Every check raises ``ConfigError`` under the key the user types (``lr``, ``data.max_seq_length``,
``optim.betas``, ...), before any model or data is loaded (the corpus source's first lines are read).

Each setting is declared once (:mod:`kd_plugin.config.declarations`): the recipe's in
:mod:`kd_plugin.preparation.recipes` (``RECIPE_BLOCKS``), the others here; the experiment's Sacred defaults and
``print_config`` comments, this parse and the table in ``docs/configuration.md`` are derived from
``PREPARATION_BLOCKS``.

Blocks and the user's keys::

    teacher                                          top level (PreparationConfig)
    seed, batch_size                                 top level (recipe: RECIPE)
    data.*              PreparationData               (recipe: RECIPE_DATA), but cache_dir, text_checks (DATA_HANDLING)
    masking.*           MaskingConfig                 (recipe: RECIPE_MASKING; kd_plugin.masking)
    train_head_only_steps, head_lr                   TrainingPhase "head" (recipe: RECIPE)
    steps, lr, optim.*  TrainingPhase "full"; OptimSettings (recipe: RECIPE, RECIPE_OPTIM; kd_plugin.config.optim)
    evaluation.*        EvaluationSettings
    cache_root, output_dir, overwrite, log_every, progress_bar   top level (PreparationConfig)

``recipe`` keeps the recipe values exactly as given: they, not the parsed numbers, are hashed into the cache key
(:func:`kd_plugin.preparation.recipes.preparation_key`), so ``lr=1`` and ``lr=1.0`` stay distinct keys as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.declarations import Block, Computed, setting
from kd_plugin.config.distill import DATA
from kd_plugin.config.optim import OptimSettings
from kd_plugin.errors import ConfigError
from kd_plugin.masking import MaskingConfig
from kd_plugin.preparation.recipes import (
    RECIPE,
    RECIPE_DATA,
    RECIPE_MASKING,
    RECIPE_OPTIM,
    recipe_of,
)
from kd_plugin.runtime.paths import teacher_cache_root
from kd_plugin.teacher_catalogue import PREPARED, TEACHERS

BASE_TEACHERS = f"{', '.join(PREPARED.values())}, or a local BERT directory"  # the bases of the prepared entries


def _is_masked_lm(path: str) -> bool:
    from transformers import AutoConfig

    from kd_plugin.families import family_of
    return family_of(AutoConfig.from_pretrained(path)).objective == "masked_lm"


def _check_teacher(teacher: Any, key: str = "teacher") -> str:
    if not isinstance(teacher, str) or not teacher:
        raise ConfigError(key, f"{teacher!r}", BASE_TEACHERS)
    if teacher in PREPARED:
        raise ConfigError(key, f"{teacher!r} is already a prepared teacher",
                          f"its base teacher {PREPARED[teacher]!r}, or another base teacher")
    if teacher in TEACHERS:
        source = TEACHERS.get(teacher)()
        if source.is_random:
            raise ConfigError(key, f"{teacher!r}: random weights, nothing to prepare", BASE_TEACHERS)
        if not _is_masked_lm(source.path):
            raise ConfigError(key, f"{teacher!r} is a causal LM: preparation fits a masked-LM head, and a causal LM "
                              "is distilled as it is (`with causal_lm`)", BASE_TEACHERS)
    return teacher


# data.* beyond the recipe: where the tokenized corpus is cached, what a garbage sample does (distillation's own)
DATA_HANDLING = Block.from_records("data", "not in the cache key: cache_dir, text_checks",
                                   **DATA.reused("cache_dir", "text_checks"))


@dataclass(frozen=True)
class PreparationData:
    """``data.*``: the corpus the head (and model) are fitted on, and the held-out documents measured."""

    corpus: str  # packaged corpus name, local path or hub dataset id
    max_seq_length: int
    held_out_fraction: float
    max_documents: int | None  # null = every document
    sample_by: str
    cache_dir: Path  # tokenized-corpus cache; not part of the recipe
    text_checks: str = "refuse"  # refuse | warn | off (kd_plugin.data.text_checks); not part of the recipe

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreparationData:
        return cls(**RECIPE_DATA.parse(data), **DATA_HANDLING.parse(data))


@dataclass(frozen=True)
class TrainingPhase:
    """One phase of masked-LM training: its own AdamW and warm-up / decay schedule over ``steps`` steps."""

    name: str  # "head": only the MLM head trains (encoder frozen); "full": every weight
    steps: int  # 0 = the phase is skipped
    optim: OptimSettings  # ``optim.*``, its ``lr`` the phase's peak learning rate (head_lr / lr)


@dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation.*``: the held-out masked-token accuracy measured before and after (not in the recipe)."""

    max_sequences: int | None = setting(None, "held-out sequences measured before / after (null = all)",
                                        partial(values.integer, allow_none=True), field_default=True)
    batch_size: int = setting(32, "sequences per evaluation batch", values.integer, field_default=True)
    seed: int = setting(0, "the fixed masks every model is measured on", partial(values.integer, minimum=0),
                        field_default=True)

    @classmethod
    def from_dict(cls, evaluation: Mapping[str, Any]) -> EvaluationSettings:
        return cls(**EVALUATION.parse(evaluation))


@dataclass(frozen=True)
class PreparationConfig:
    teacher: str = setting("bert-tiny", "base: bert-tiny (weak MLM head), minilm-l6 (no MLM head), or a local BERT "
                           "directory; the recipe's defaults are its own", _check_teacher)
    seed: int  # head init, data order, masks
    data: PreparationData
    masking: MaskingConfig
    batch_size: int  # sequences per optimizer step
    head: TrainingPhase  # train_head_only_steps at head_lr
    full: TrainingPhase  # steps at lr
    evaluation: EvaluationSettings
    cache_root: Path | None = setting(Computed(lambda: str(teacher_cache_root()),
                                               "`$KD_TEACHER_CACHE` or `\".cache/teachers\"`"),
                                      "where prepared teachers are cached: $KD_TEACHER_CACHE or "
                                      "<project>/.cache/teachers", values.optional_directory, bookkeeping=True)
    output_dir: Path | None = setting(None, "null = <cache_root>/<teacher>-prepared-<key>", values.optional_directory,
                                      bookkeeping=True)
    overwrite: bool = setting(False, "prepare again even when the cache directory is complete", values.flag)
    log_every: int = setting(10, "optimizer steps between logged training metrics", values.integer,
                             bookkeeping=True)
    progress_bar: bool = setting(True, "a tqdm bar; False: one plain log line per log point (for log files)",
                                 values.flag, bookkeeping=True)
    recipe: Mapping[str, Any] = field(repr=False)  # the recipe values as given: the cache key's input
    raw: Mapping[str, Any] = field(repr=False, compare=False)  # the config as given (recorded with the teacher)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> PreparationConfig:
        """Parse and check the whole preparation config; no model is loaded (the corpus source is checked)."""
        top = PREPARATION.parse(config)  # the teacher first
        recipe = recipe_of(config)  # every recipe key present ("<key>: missing from the preparation config")
        data_block = values.block(config, "data", (*RECIPE_DATA.names(), *DATA_HANDLING.names()))  # no unread key
        masking_block = values.block(config, "masking", RECIPE_MASKING.names())
        optim_block = values.block(config, "optim", RECIPE_OPTIM.names())
        evaluation_block = values.block(config, "evaluation", EVALUATION.names(), none_is_empty=True)
        phases = RECIPE.parse(recipe)
        data = PreparationData.from_dict(data_block)
        from kd_plugin.data.source_checks import check_corpus_source  # reads the file head, no model

        check_corpus_source(data.corpus, sample_by=data.sample_by, remember_in=data.cache_dir)
        masking = MaskingConfig.from_dict(masking_block)
        if phases["train_head_only_steps"] + phases["steps"] == 0:
            raise ConfigError("steps", "train_head_only_steps + steps is 0: nothing would be trained", "a total >= 1")
        optim = OptimSettings.from_dict(optim_block, lr=recipe["lr"], lr_key="lr", clipping_may_be_zero=False)
        return cls(
            **top,
            seed=phases["seed"],
            data=data,
            masking=masking,
            batch_size=phases["batch_size"],
            head=TrainingPhase("head", phases["train_head_only_steps"], replace(optim, lr=phases["head_lr"])),
            full=TrainingPhase("full", phases["steps"], optim),
            evaluation=EvaluationSettings.from_dict(evaluation_block),
            recipe=MappingProxyType(recipe),
            raw=MappingProxyType(dict(config)),
        )


# Every preparation setting, declared once: the recipe's blocks (kd_plugin.preparation.recipes) and these.
PREPARATION = Block.of("", "the base teacher; where the prepared teacher goes; what is shown", PreparationConfig)
EVALUATION = Block.of("evaluation", "the held-out masked-token accuracy measured before and after (not in the "
                      "cache key)", EvaluationSettings)
PREPARATION_BLOCKS = (PREPARATION, RECIPE, RECIPE_DATA, DATA_HANDLING, RECIPE_MASKING, RECIPE_OPTIM, EVALUATION)
