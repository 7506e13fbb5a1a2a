"""The teacher-preparation experiment's config, parsed once into frozen, validated blocks.

``PreparationConfig.from_dict(config)`` is called at the Sacred boundary (``experiments/prepare_teacher.py``'s
config hook, its ``where`` command and main function) and by :func:`kd_plugin.preparation.ensure_prepared` before
it starts a preparation; :func:`kd_plugin.preparation.mlm_training.prepare_teacher` and its training loop take
the typed object. Every check raises ``ConfigError`` under the key the user types (``lr``, ``data.max_seq_length``,
``optim.betas``, ...), before any model or data is loaded (the corpus source's first lines are read).

Blocks and the user's keys::

    teacher                                          top level
    seed, batch_size                                 top level (recipe)
    data.*              PreparationData               (recipe, but data.cache_dir)
    masking.*           MaskingConfig                 (recipe; kd_plugin.masking)
    train_head_only_steps, head_lr                   TrainingPhase "head" (recipe)
    steps, lr, optim.*  TrainingPhase "full"; OptimSettings (recipe; kd_plugin.config.optim)
    evaluation.*        EvaluationSettings
    cache_root, output_dir, overwrite, log_every, progress_bar   top level

``recipe`` keeps the recipe values exactly as given: they, not the parsed numbers, are hashed into the cache key
(:func:`kd_plugin.preparation.recipes.preparation_key`), so ``lr=1`` and ``lr=1.0`` stay distinct keys as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.optim import OptimSettings
from kd_plugin.data.corpus_sources import check_sample_by
from kd_plugin.data.text_checks import TEXT_CHECKS
from kd_plugin.errors import ConfigError
from kd_plugin.masking import MaskingConfig
from kd_plugin.preparation.recipes import BASE_RECIPE, PREPARED_TEACHERS, recipe_of
from kd_plugin.runtime.paths import CACHE
from kd_plugin.teacher_catalogue import TEACHERS

# not in the key: cache_dir (where the tokenized corpus is cached), text_checks (what a garbage sample does)
DATA_KEYS = (*BASE_RECIPE["data"], "cache_dir", "text_checks")
OPTIM_KEYS = tuple(BASE_RECIPE["optim"])
EVALUATION_KEYS = ("max_sequences", "batch_size", "seed")
DEFAULT_DATASET_CACHE = CACHE / "datasets"  # the experiment's default data.cache_dir (shared with distill)


def _is_masked_lm(path: str) -> bool:
    from transformers import AutoConfig

    from kd_plugin.families import family_of
    return family_of(AutoConfig.from_pretrained(path)).objective == "masked_lm"


def _check_teacher(teacher: Any) -> str:
    if not isinstance(teacher, str) or not teacher:
        raise ConfigError("teacher", f"{teacher!r}", "bert-tiny, minilm-l6, or a local BERT directory")
    if teacher in PREPARED_TEACHERS:
        raise ConfigError("teacher", f"{teacher!r} is already a prepared teacher",
                          f"its base teacher {PREPARED_TEACHERS[teacher]!r}, or another base teacher")
    if teacher in TEACHERS:
        source = TEACHERS.get(teacher)()
        if source.is_random:
            raise ConfigError("teacher", f"{teacher!r}: random weights, nothing to prepare",
                              "bert-tiny, minilm-l6, a local BERT directory")
        if not _is_masked_lm(source.path):
            raise ConfigError("teacher", f"{teacher!r} is a causal LM: preparation fits a masked-LM head, and a "
                              "causal LM is distilled as it is (`with causal_lm`)", "bert-tiny, minilm-l6, a local "
                              "BERT directory")
    return teacher


def _block(config: Mapping[str, Any], key: str, known: tuple[str, ...], default: Any = None) -> Mapping[str, Any]:
    """``values.block``, with ``default`` for a block the config leaves out (the catalogue's partial configs)."""
    if key not in config and default is not None:
        return default
    return values.block(config, key, known)


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
        corpus = data["corpus"]
        if not isinstance(corpus, str) or not corpus:
            raise ConfigError("data.corpus", f"{corpus!r}", "a corpus name, a local path, or a hub dataset id")
        return cls(
            corpus=corpus,
            max_seq_length=values.integer(data["max_seq_length"], "data.max_seq_length", minimum=8, maximum=512),
            held_out_fraction=values.number(data["held_out_fraction"], "data.held_out_fraction", 0.0, 1.0,
                                            low_open=True, high_open=True),
            max_documents=values.integer(data["max_documents"], "data.max_documents", minimum=2, allow_none=True),
            sample_by=check_sample_by(data["sample_by"]),
            cache_dir=Path(values.text(data.get("cache_dir", str(DEFAULT_DATASET_CACHE)), "data.cache_dir",
                                       what="a directory")),
            text_checks=values.choice(data.get("text_checks", "refuse"), "data.text_checks", TEXT_CHECKS),
        )


@dataclass(frozen=True)
class TrainingPhase:
    """One phase of masked-LM training: its own AdamW and warm-up / decay schedule over ``steps`` steps."""

    name: str  # "head": only the MLM head trains (encoder frozen); "full": every weight
    steps: int  # 0 = the phase is skipped
    optim: OptimSettings  # ``optim.*``, its ``lr`` the phase's peak learning rate (head_lr / lr)


@dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation.*``: the held-out masked-token accuracy measured before and after (not in the recipe)."""

    max_sequences: int | None = None  # null = every held-out sequence
    batch_size: int = 32
    seed: int = 0  # the fixed masks every model is measured on

    @classmethod
    def from_dict(cls, evaluation: Mapping[str, Any]) -> EvaluationSettings:
        defaults = cls()
        return cls(
            max_sequences=values.integer(evaluation.get("max_sequences", defaults.max_sequences),
                                         "evaluation.max_sequences", allow_none=True),
            batch_size=values.integer(evaluation.get("batch_size", defaults.batch_size), "evaluation.batch_size"),
            seed=values.integer(evaluation.get("seed", defaults.seed), "evaluation.seed", minimum=0),
        )


@dataclass(frozen=True)
class PreparationConfig:
    teacher: str  # the base teacher: a catalogue name or a local BERT directory
    seed: int  # head init, data order, masks
    data: PreparationData
    masking: MaskingConfig
    batch_size: int  # sequences per optimizer step
    head: TrainingPhase  # train_head_only_steps at head_lr
    full: TrainingPhase  # steps at lr
    evaluation: EvaluationSettings
    cache_root: Path | None  # null = $KD_TEACHER_CACHE or <project>/.cache/teachers
    output_dir: Path | None  # null = <cache_root>/<teacher>-prepared-<key>
    overwrite: bool  # prepare again even when the cache directory is complete
    log_every: int  # optimizer steps between logged training metrics
    progress_bar: bool
    recipe: Mapping[str, Any] = field(repr=False)  # the recipe values as given: the cache key's input
    raw: Mapping[str, Any] = field(repr=False, compare=False)  # the config as given (recorded with the teacher)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> PreparationConfig:
        """Parse and check the whole preparation config; no model is loaded (the corpus source is checked)."""
        teacher = _check_teacher(config.get("teacher"))
        recipe = recipe_of(config)  # every recipe key present ("<key>: missing from the preparation config")
        data_block = _block(config, "data", DATA_KEYS)  # and no key that nobody reads
        masking_block = _block(config, "masking", tuple(BASE_RECIPE["masking"]))
        optim_block = _block(config, "optim", OPTIM_KEYS)
        evaluation_block = _block(config, "evaluation", EVALUATION_KEYS, default={})
        seed = values.integer(recipe["seed"], "seed", minimum=0)
        data = PreparationData.from_dict(data_block)
        from kd_plugin.data.source_checks import check_corpus_source  # reads the file head, no model

        check_corpus_source(data.corpus, sample_by=data.sample_by)
        masking = MaskingConfig.from_dict(masking_block)
        batch_size = values.integer(recipe["batch_size"], "batch_size")
        head_steps = values.integer(recipe["train_head_only_steps"], "train_head_only_steps", minimum=0)
        full_steps = values.integer(recipe["steps"], "steps", minimum=0)
        if head_steps + full_steps == 0:
            raise ConfigError("steps", "train_head_only_steps + steps is 0: nothing would be trained", "a total >= 1")
        head_lr = values.number(recipe["head_lr"], "head_lr", 0.0, 1.0, low_open=True)
        optim = OptimSettings.from_dict(optim_block, lr=recipe["lr"], lr_key="lr", clipping_may_be_zero=False)
        cache_root, output_dir = config.get("cache_root"), config.get("output_dir")
        return cls(
            teacher=teacher,
            seed=seed,
            data=data,
            masking=masking,
            batch_size=batch_size,
            head=TrainingPhase("head", head_steps, replace(optim, lr=head_lr)),
            full=TrainingPhase("full", full_steps, optim),
            evaluation=EvaluationSettings.from_dict(evaluation_block),
            cache_root=None if not cache_root else Path(values.text(cache_root, "cache_root", what="a directory")),
            output_dir=None if not output_dir else Path(values.text(output_dir, "output_dir", what="a directory")),
            overwrite=values.flag(config.get("overwrite", False), "overwrite"),
            log_every=values.integer(config.get("log_every", 10), "log_every"),
            progress_bar=values.flag(config.get("progress_bar", True), "progress_bar"),
            recipe=MappingProxyType(recipe),
            raw=MappingProxyType(dict(config)),
        )
