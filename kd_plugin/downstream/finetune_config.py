"""The finetune experiment's config, parsed once into frozen, validated blocks.

``FinetuneConfig.from_dict(config)`` is called at the Sacred boundary (``experiments/finetune.py``'s config hook
and main function); :class:`~kd_plugin.downstream.evaluation.DownstreamEvaluation` and what it calls take the
typed object and never look a string key up again. Every check raises ``ConfigError`` under the key the user
types (``lr[1]``, ``distillation.T``, ``size_speed.seq_length``, ...), before anything is loaded.

Blocks and the user's keys::

    model, distill_run_id, distill_db.*, tracking.*   ModelSource           (kd_plugin.downstream.run_link)
    tasks                                            tuple of task names   (kd_plugin.downstream.tasks)
    split_seed, max_train_examples, max_eval_examples SplitSettings
    seed, max_seq_length, batch_size, eval_batch_size, lr (one value or a grid), weight_decay,
    warmup_proportion, max_grad_norm, epochs, log_every
                                                     TrainingSettings -> FinetuneSettings per learning rate
    distillation.*                                   DistillationSettings  -> FinetuneLoss
    size_speed.*                                     SizeSpeedSettings     -> SpeedSettings
    threads, save_models, output_dir                 top level
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.downstream.distill_loss import FinetuneLoss, check_temperature, check_weight, check_weights_sum
from kd_plugin.downstream.finetuning import FinetuneSettings
from kd_plugin.downstream.run_link import ModelSource
from kd_plugin.downstream.size_speed import SpeedSettings
from kd_plugin.downstream.tasks import check_task_name
from kd_plugin.errors import ConfigError

DISTILLATION_KEYS = ("teacher_model", "alpha_task", "alpha_ce", "T", "teacher_lr", "teacher_epochs")
SIZE_SPEED_KEYS = ("enabled", "reference", "batch_size", "seq_length", "repeats", "warmup")
BERT_POSITIONS = 512


def learning_rates(value: Any, key: str) -> tuple[float, ...]:
    """``lr``: one value, or a non-empty list of distinct values (a grid searched on the validation split)."""
    if isinstance(value, (list, tuple)):
        if not value or len(set(value)) != len(value):
            raise ConfigError(key, f"{value!r} is not a non-empty list of distinct values", "lr or [lr1, lr2, ...]")
        return tuple(values.number(lr, f"{key}[{i}]", 0.0, 1.0, low_open=True) for i, lr in enumerate(value))
    return (values.number(value, key, 0.0, 1.0, low_open=True),)


def sequence_length(value: Any, key: str, minimum: int, allowed: str) -> int:
    length = values.integer(value, key, minimum=minimum)
    if length > BERT_POSITIONS:
        raise ConfigError(key, f"{length} exceeds BERT's {BERT_POSITIONS} positions", allowed)
    return length


def parse_tasks(tasks: Any) -> tuple[str, ...]:
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError("tasks", f"{tasks!r} is not a non-empty list of task names", "e.g. [mr_sentiment, bbc_topics]")
    for name in tasks:
        check_task_name(name)
    if len(set(tasks)) != len(tasks):
        raise ConfigError("tasks", f"{list(tasks)} names a task twice", "each task once")
    return tuple(tasks)


@dataclass(frozen=True)
class SplitSettings:
    """Which examples: the fixed splits of ``split_seed`` and, for quick runs, their first N rows."""

    split_seed: int  # fixed train / validation / test splits (not ``seed``)
    max_train_examples: int | None  # null = every training example
    max_eval_examples: int | None  # null = every validation / test example

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> SplitSettings:
        return cls(
            split_seed=values.integer(cfg.get("split_seed"), "split_seed", minimum=0),
            max_train_examples=values.integer(cfg.get("max_train_examples"), "max_train_examples", allow_none=True),
            max_eval_examples=values.integer(cfg.get("max_eval_examples"), "max_eval_examples", allow_none=True),
        )


@dataclass(frozen=True)
class TrainingSettings:
    """How a model is fine-tuned on each task: the hyper-parameters and the learning rates tried.

    With several learning rates (a grid) one classifier is fine-tuned per rate and the one with the best
    validation accuracy is kept.
    """

    seed: int  # classifier-head initialisation and training order
    max_seq_length: int
    batch_size: int
    eval_batch_size: int
    learning_rates: tuple[float, ...]  # ``lr``: one value, or the grid
    weight_decay: float
    warmup_proportion: float
    max_grad_norm: float
    epochs: int
    log_every: int

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> TrainingSettings:
        """From the top level; ``lr`` first (as the user reads the grid before the rest)."""
        lrs = learning_rates(cfg.get("lr"), "lr")
        return cls(
            max_seq_length=sequence_length(cfg.get("max_seq_length"), "max_seq_length", 8, f"8..{BERT_POSITIONS}"),
            batch_size=values.integer(cfg.get("batch_size"), "batch_size"),
            eval_batch_size=values.integer(cfg.get("eval_batch_size"), "eval_batch_size"),
            learning_rates=lrs,
            weight_decay=values.number(cfg.get("weight_decay"), "weight_decay", 0.0, 1.0),
            warmup_proportion=values.number(cfg.get("warmup_proportion"), "warmup_proportion", 0.0, 1.0,
                                            high_open=True),
            max_grad_norm=values.number(cfg.get("max_grad_norm"), "max_grad_norm", 0.0, math.inf, low_open=True,
                                        high_open=True),
            epochs=values.integer(cfg.get("epochs"), "epochs"),
            log_every=values.integer(cfg.get("log_every"), "log_every"),
            seed=values.integer(cfg.get("seed"), "seed", minimum=0),
        )

    def at(self, lr: float) -> FinetuneSettings:
        """The settings of one fine-tuning at learning rate ``lr``."""
        return FinetuneSettings(max_seq_length=self.max_seq_length, batch_size=self.batch_size,
                                eval_batch_size=self.eval_batch_size, lr=lr, weight_decay=self.weight_decay,
                                warmup_proportion=self.warmup_proportion, max_grad_norm=self.max_grad_norm,
                                epochs=self.epochs, seed=self.seed, log_every=self.log_every)


@dataclass(frozen=True)
class DistillationSettings:
    """``distillation.*``: fine-tuning with distillation ("DistilBERT (D)"); off while ``teacher_model`` is null."""

    teacher_model: str | Mapping[str, str] | None  # a model fine-tuned here first, or {task: fine-tuned classifier}
    alpha_task: float  # cross-entropy on the labels
    alpha_ce: float  # soft-target KL * T^2 against the teacher's logits
    temperature: float  # ``T``
    teacher_learning_rates: tuple[float, ...] | None  # ``teacher_lr``; null = the student's
    teacher_epochs: int | None  # null = the student's

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], tasks: tuple[str, ...]) -> DistillationSettings:
        teacher_lr = d.get("teacher_lr")
        teacher_lrs = None if teacher_lr is None else learning_rates(teacher_lr, "distillation.teacher_lr")
        teacher = d.get("teacher_model")
        if isinstance(teacher, Mapping):  # task -> a classifier already fine-tuned on it
            missing = [t for t in tasks if t not in teacher]
            if missing or set(teacher) - set(tasks):
                raise ConfigError("distillation.teacher_model", f"fine-tuned teachers given for {sorted(teacher)}, "
                                  f"tasks are {list(tasks)}", "one directory per task in `tasks`")
            if not all(isinstance(v, str) and v for v in teacher.values()):
                raise ConfigError("distillation.teacher_model", "every fine-tuned teacher must be a directory",
                                  "paths")
            teacher = MappingProxyType(dict(teacher))
        elif teacher is not None and (not isinstance(teacher, str) or not teacher):
            raise ConfigError("distillation.teacher_model", f"{teacher!r} is not a model", "null, a model name or "
                              "directory (fine-tuned first on each task), or {task: fine-tuned classifier directory}")
        alpha_task = check_weight(d.get("alpha_task"), "distillation.alpha_task")
        alpha_ce = check_weight(d.get("alpha_ce"), "distillation.alpha_ce")
        if teacher is not None:  # the weights only matter (and must not both be 0) with a teacher
            check_weights_sum(alpha_task, alpha_ce)
        return cls(
            teacher_model=teacher,
            alpha_task=alpha_task,
            alpha_ce=alpha_ce,
            temperature=check_temperature(d.get("T"), "distillation.T"),
            teacher_learning_rates=teacher_lrs,
            teacher_epochs=values.integer(d.get("teacher_epochs"), "distillation.teacher_epochs", allow_none=True),
        )

    @property
    def enabled(self) -> bool:
        return self.teacher_model is not None

    def loss(self) -> FinetuneLoss:
        """The student's loss: labels only, or labels + soft targets when a teacher is declared."""
        if not self.enabled:
            return FinetuneLoss()
        return FinetuneLoss(alpha_task=self.alpha_task, alpha_ce=self.alpha_ce, temperature=self.temperature)


@dataclass(frozen=True)
class SizeSpeedSettings:
    """``size_speed.*``: parameters and throughput of the evaluated model against a reference."""

    enabled: bool
    reference: str | None  # null = distillation.teacher_model or the distill run's teacher
    speed: SpeedSettings  # batch_size, seq_length, repeats, warmup

    @classmethod
    def from_dict(cls, s: Mapping[str, Any]) -> SizeSpeedSettings:
        enabled, reference = s.get("enabled"), s.get("reference")
        if not isinstance(enabled, bool):
            raise ConfigError("size_speed.enabled", f"{enabled!r} is not a boolean", "true, false")
        if reference is not None and (not isinstance(reference, str) or not reference):
            raise ConfigError("size_speed.reference", f"{reference!r} is not a model", "null or a model name/directory")
        return cls(enabled=enabled, reference=reference, speed=SpeedSettings(
            batch_size=values.integer(s.get("batch_size"), "size_speed.batch_size"),
            seq_length=sequence_length(s.get("seq_length"), "size_speed.seq_length", 1, f"1..{BERT_POSITIONS}"),
            repeats=values.integer(s.get("repeats"), "size_speed.repeats"),
            warmup=values.integer(s.get("warmup"), "size_speed.warmup", minimum=0),
        ))


@dataclass(frozen=True)
class FinetuneConfig:
    source: ModelSource
    tasks: tuple[str, ...]
    splits: SplitSettings
    training: TrainingSettings
    distillation: DistillationSettings
    size_speed: SizeSpeedSettings
    threads: int | None  # torch intra-op threads; null = torch's default
    save_models: bool  # keep the fine-tuned classifiers under <output_dir>/models/<task>
    output_dir: Path | None  # null = the experiment's default (outputs/finetune/<time>-<config hash>)
    raw: Mapping[str, Any] = field(repr=False, compare=False)  # the config as given (for the output folder's hash)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> FinetuneConfig:
        """Parse and validate everything that needs no model (the model itself: ``resolve_evaluated_model``)."""
        tasks = parse_tasks(cfg.get("tasks"))
        source = ModelSource.from_dict(cfg)
        training = TrainingSettings.from_dict(cfg)
        distillation_block = values.block(cfg, "distillation", sorted(DISTILLATION_KEYS))
        splits = SplitSettings.from_dict(cfg)
        threads = values.integer(cfg.get("threads"), "threads", allow_none=True)
        distillation = DistillationSettings.from_dict(distillation_block, tasks)
        output_dir = cfg.get("output_dir")
        return cls(
            source=source,
            tasks=tasks,
            splits=splits,
            training=training,
            distillation=distillation,
            size_speed=SizeSpeedSettings.from_dict(values.block(cfg, "size_speed", sorted(SIZE_SPEED_KEYS))),
            threads=threads,
            save_models=values.flag(cfg.get("save_models", False), "save_models"),
            output_dir=None if not output_dir else Path(values.text(output_dir, "output_dir", what="a directory")),
            raw=MappingProxyType(dict(cfg)),
        )

    @property
    def teacher_training(self) -> TrainingSettings:
        """The teacher's fine-tuning: the student's, with ``distillation.teacher_lr`` / ``teacher_epochs`` if set."""
        d = self.distillation
        return replace(self.training,
                       learning_rates=d.teacher_learning_rates or self.training.learning_rates,
                       epochs=self.training.epochs if d.teacher_epochs is None else d.teacher_epochs)
