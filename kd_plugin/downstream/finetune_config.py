"""The finetune experiment's config, parsed once into frozen, validated blocks.

``FinetuneConfig.from_dict(config)`` is called at the Sacred boundary (``experiments/finetune.py``'s config hook
and main function); :class:`~kd_plugin.downstream.evaluation.DownstreamEvaluation` and what it calls take the
typed object and never look a string key up again. Every check raises ``ConfigError`` under the key the user
types (``lr[1]``, ``distillation.T``, ``size_speed.seq_length``, ...), before anything is loaded.

Each setting is declared once (:mod:`kd_plugin.config.declarations`): its block's dataclass field holds its
default, one-line doc and check; the experiment's Sacred defaults and ``print_config`` comments, each
``from_dict``'s parse and the table in ``docs/configuration.md`` are derived from ``FINETUNE_BLOCKS``.

Blocks and the user's keys::

    model, distill_run_id, distill_db.*, tracking.*   ModelSource           (kd_plugin.downstream.run_link)
    tasks                                            tuple of task names   (kd_plugin.downstream.tasks)
    split_seed, max_train_examples, max_eval_examples SplitSettings
    seed, max_seq_length, batch_size, eval_batch_size, lr (one value or a grid), weight_decay,
    warmup_proportion, max_grad_norm, epochs, log_every, progress_bar
                                                     TrainingSettings -> FinetuneSettings per learning rate
    distillation.*                                   DistillationSettings  -> FinetuneLoss
    size_speed.*                                     SizeSpeedSettings     -> SpeedSettings
    threads, save_models, output_dir                 top level
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.declarations import Block, setting
from kd_plugin.config.optim import OPTIM, clipping_norm_above_zero
from kd_plugin.downstream.distill_loss import FinetuneLoss, check_temperature, check_weight, check_weights_sum
from kd_plugin.downstream.finetuning import FinetuneSettings
from kd_plugin.downstream.run_link import DISTILL_DB, SOURCE, ModelSource
from kd_plugin.downstream.size_speed import SpeedSettings
from kd_plugin.downstream.tasks import DEFAULT_SPLIT_SEED, OFFLINE_TASKS, check_task_name
from kd_plugin.errors import ConfigError

BERT_POSITIONS = 512
optional_count = partial(values.integer, allow_none=True)


def learning_rate_grid(value: Any, key: str) -> tuple[float, ...]:
    """``lr``: one value, or a non-empty list of distinct values (a grid searched on the validation split)."""
    if isinstance(value, (list, tuple)):
        if not value or len(set(value)) != len(value):
            raise ConfigError(key, f"{value!r} is not a non-empty list of distinct values", "lr or [lr1, lr2, ...]")
        return tuple(values.number(lr, f"{key}[{i}]", 0.0, 1.0, low_open=True) for i, lr in enumerate(value))
    return (values.number(value, key, 0.0, 1.0, low_open=True),)


def sequence_length(value: Any, key: str, minimum: int) -> int:
    allowed = f"{minimum}..{BERT_POSITIONS}"
    try:
        length = values.integer(value, key, minimum=minimum)
    except ConfigError as err:
        raise ConfigError(key, err.problem, allowed) from None
    if length > BERT_POSITIONS:
        raise ConfigError(key, f"{length} exceeds BERT's {BERT_POSITIONS} positions", allowed)
    return length


def parse_tasks(tasks: Any, key: str = "tasks") -> tuple[str, ...]:
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError(key, f"{tasks!r} is not a non-empty list of task names", "e.g. [mr_sentiment, bbc_topics]")
    for name in tasks:
        check_task_name(name)
    if len(set(tasks)) != len(tasks):
        raise ConfigError(key, f"{list(tasks)} names a task twice", "each task once")
    return tuple(tasks)


@dataclass(frozen=True)
class SplitSettings:
    """Which examples: the fixed splits of ``split_seed`` and, for quick runs, their first N rows."""

    split_seed: int = setting(DEFAULT_SPLIT_SEED, "fixed train/validation/test splits (not seed): keep it fixed to "
                              "compare runs", partial(values.integer, minimum=0))
    max_train_examples: int | None = setting(None, "use only the first N training examples per task (quick runs)",
                                             optional_count)
    max_eval_examples: int | None = setting(None, "and the first N validation / test examples", optional_count)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> SplitSettings:
        return cls(**SPLITS.parse(cfg))


@dataclass(frozen=True)
class TrainingSettings:
    """How a model is fine-tuned on each task: the hyper-parameters and the learning rates tried.

    With several learning rates (a grid) one classifier is fine-tuned per rate and the one with the best
    validation accuracy is kept.
    """

    seed: int = setting(42, "classifier-head initialisation and training order (the splits use split_seed)",
                        partial(values.integer, minimum=0))
    max_seq_length: int = setting(128, "longer texts are truncated", partial(sequence_length, minimum=8))
    batch_size: int = setting(32, "training examples per optimizer step", values.integer)
    eval_batch_size: int = setting(128, "examples per evaluation batch", values.integer)
    learning_rates: tuple[float, ...] = setting(3e-4, "AdamW, linear warm-up then decay; a list = a grid: per task, "
                                                "the lr with the best validation accuracy", learning_rate_grid)
    weight_decay: float = OPTIM["weight_decay"].as_field(default=0.01)
    warmup_proportion: float = OPTIM["warmup_proportion"].as_field(default=0.1)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (always clipped)", clipping_norm_above_zero)
    epochs: int = setting(3, "passes over each task's training examples", values.integer)
    log_every: int = setting(50, "optimizer steps between logged training-loss points", values.integer,
                             bookkeeping=True)
    progress_bar: bool = setting(True, "within each epoch a tqdm bar; False: a plain line per tenth of an epoch "
                                 "(for log files)", values.flag, bookkeeping=True)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> TrainingSettings:
        """From the top level (``lr``: the field ``learning_rates``)."""
        parsed = TRAINING.parse(cfg)
        return cls(learning_rates=parsed.pop("lr"), **parsed)

    def at(self, lr: float) -> FinetuneSettings:
        """The settings of one fine-tuning at learning rate ``lr``."""
        return FinetuneSettings(max_seq_length=self.max_seq_length, batch_size=self.batch_size,
                                eval_batch_size=self.eval_batch_size, lr=lr, weight_decay=self.weight_decay,
                                warmup_proportion=self.warmup_proportion, max_grad_norm=self.max_grad_norm,
                                epochs=self.epochs, seed=self.seed, log_every=self.log_every,
                                progress_bar=self.progress_bar)


def _teacher_model(value: Any, key: str) -> str | Mapping[str, str] | None:
    """null, a model fine-tuned here first on each task, or ``{task: fine-tuned classifier directory}``."""
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(v, str) and v for v in value.values()):
            raise ConfigError(key, "every fine-tuned teacher must be a directory", "paths")
        return MappingProxyType(dict(value))
    raise ConfigError(key, f"{value!r} is not a model", "null, a model name or directory (fine-tuned first on each "
                      "task), or {task: fine-tuned classifier directory}")


def _teacher_learning_rates(value: Any, key: str) -> tuple[float, ...] | None:
    return None if value is None else learning_rate_grid(value, key)


@dataclass(frozen=True)
class DistillationSettings:
    """``distillation.*``: fine-tuning with distillation ("DistilBERT (D)"); off while ``teacher_model`` is null."""

    teacher_model: str | Mapping[str, str] | None = setting(
        None, "model name/dir fine-tuned first on each task, or {task: dir of a fine-tuned classifier}", _teacher_model)
    alpha_task: float = setting(0.5, "cross-entropy on the labels", check_weight)
    alpha_ce: float = setting(0.5, "soft-target KL * T^2 against the teacher's logits (the `ce` term)", check_weight)
    temperature: float = setting(2.0, "temperature (the public run_squad_w_distillation.py defaults: 0.5 / 0.5 / "
                                 "2.0)", check_temperature)
    teacher_learning_rates: tuple[float, ...] | None = setting(None, "null = lr", _teacher_learning_rates)
    teacher_epochs: int | None = setting(None, "null = epochs", optional_count)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], tasks: tuple[str, ...]) -> DistillationSettings:
        parsed = DISTILLATION.parse(d)
        teacher = parsed["teacher_model"]
        if isinstance(teacher, Mapping) and set(teacher) != set(tasks):  # task -> a classifier fine-tuned on it
            raise ConfigError("distillation.teacher_model", f"fine-tuned teachers given for {sorted(teacher)}, "
                              f"tasks are {list(tasks)}", "one directory per task in `tasks`")
        if teacher is not None:  # the weights only matter (and must not both be 0) with a teacher
            check_weights_sum(parsed["alpha_task"], parsed["alpha_ce"])
        return cls(teacher_model=teacher, alpha_task=parsed["alpha_task"], alpha_ce=parsed["alpha_ce"],
                   temperature=parsed["T"], teacher_learning_rates=parsed["teacher_lr"],
                   teacher_epochs=parsed["teacher_epochs"])

    @property
    def enabled(self) -> bool:
        return self.teacher_model is not None

    def loss(self) -> FinetuneLoss:
        """The student's loss: labels only, or labels + soft targets when a teacher is declared."""
        if not self.enabled:
            return FinetuneLoss()
        return FinetuneLoss(alpha_task=self.alpha_task, alpha_ce=self.alpha_ce, temperature=self.temperature)


def _reference(value: Any, key: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(key, f"{value!r} is not a model", "null or a model name/directory")
    return value


@dataclass(frozen=True)
class SizeSpeedSettings:
    """``size_speed.*``: parameters and throughput of the evaluated model against a reference (the timing's
    defaults are :class:`SpeedSettings`', shared with ``python -m kd_plugin.downstream.size_speed``)."""

    enabled: bool = setting(True, "report parameters and throughput against the reference", values.flag)
    reference: str | None = setting(None, "the teacher to compare with; null = distillation.teacher_model or the "
                                    "distill run's teacher", _reference)
    batch_size: int = setting(SpeedSettings.batch_size, "sequences per timed batch", values.integer)
    seq_length: int = setting(SpeedSettings.seq_length, "tokens per timed sequence",
                              partial(sequence_length, minimum=1))
    repeats: int = setting(SpeedSettings.repeats, "median of this many timed repeats", values.integer)
    warmup: int = setting(SpeedSettings.warmup, "untimed passes first", partial(values.integer, minimum=0))

    @classmethod
    def from_dict(cls, s: Mapping[str, Any]) -> SizeSpeedSettings:
        return cls(**SIZE_SPEED.parse(s))

    @property
    def speed(self) -> SpeedSettings:
        return SpeedSettings(batch_size=self.batch_size, seq_length=self.seq_length, repeats=self.repeats,
                             warmup=self.warmup)


@dataclass(frozen=True)
class FinetuneConfig:
    source: ModelSource
    tasks: tuple[str, ...] = setting(list(OFFLINE_TASKS), "the offline tasks, or glue/<name> (online)", parse_tasks)
    splits: SplitSettings
    training: TrainingSettings
    distillation: DistillationSettings
    size_speed: SizeSpeedSettings
    threads: int | None = setting(None, "torch intra-op threads; null = torch's default (one per core; with other "
                                  "jobs on the cores, 1 can be many times faster)", optional_count, bookkeeping=True)
    save_models: bool = setting(False, "keep the fine-tuned classifiers under <output_dir>/models/<task>",
                                values.flag, bookkeeping=True)
    output_dir: Path | None = setting(None, "null = outputs/finetune/<time>-<config hash>", values.optional_directory,
                                      bookkeeping=True)
    raw: Mapping[str, Any] = field(repr=False, compare=False)  # the config as given (for the output folder's hash)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> FinetuneConfig:
        """Parse and validate everything that needs no model (the model itself: ``resolve_evaluated_model``)."""
        top = FINETUNE.parse(cfg)
        source = ModelSource.from_dict(cfg)
        training = TrainingSettings.from_dict(cfg)
        distillation_block = values.block(cfg, "distillation", sorted(DISTILLATION.names()))
        splits = SplitSettings.from_dict(cfg)
        distillation = DistillationSettings.from_dict(distillation_block, top["tasks"])
        return cls(
            **top,
            source=source,
            splits=splits,
            training=training,
            distillation=distillation,
            size_speed=SizeSpeedSettings.from_dict(values.block(cfg, "size_speed", sorted(SIZE_SPEED.names()))),
            raw=MappingProxyType(dict(cfg)),
        )

    @property
    def teacher_training(self) -> TrainingSettings:
        """The teacher's fine-tuning: the student's, with ``distillation.teacher_lr`` / ``teacher_epochs`` if set."""
        d = self.distillation
        return replace(self.training,
                       learning_rates=d.teacher_learning_rates or self.training.learning_rates,
                       epochs=self.training.epochs if d.teacher_epochs is None else d.teacher_epochs)


# Every finetune setting, declared once: the fields above (their ``setting(...)``) and ModelSource's.
FINETUNE = Block.of("", "the tasks, and where the fine-tuned classifiers go", FinetuneConfig)
SPLITS = Block.of("", "which examples: fixed splits, and their first N rows for quick runs", SplitSettings)
TRAINING = Block.of("", "how each task is fine-tuned", TrainingSettings, learning_rates="lr")
DISTILLATION = Block.of("distillation", "fine-tuning with distillation (\"DistilBERT (D)\"); off while "
                        "teacher_model is null", DistillationSettings, temperature="T",
                        teacher_learning_rates="teacher_lr")
SIZE_SPEED = Block.of("size_speed", "parameters and throughput of the evaluated model against a reference",
                      SizeSpeedSettings)
FINETUNE_BLOCKS = (SOURCE, DISTILL_DB, FINETUNE, SPLITS, TRAINING, DISTILLATION, SIZE_SPEED)
