"""Checks of the finetune experiment's config, before anything is loaded: each failure is a ``ConfigError``
naming the key and what is allowed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kd_plugin.downstream.distill_loss import FinetuneLoss
from kd_plugin.downstream.finetuning import FinetuneSettings
from kd_plugin.downstream.size_speed import SpeedSettings
from kd_plugin.downstream.tasks import check_task_name
from kd_plugin.errors import ConfigError
from kd_plugin.training.run_config import _in_range, _positive_int

DISTILLATION_KEYS = {"teacher_model", "alpha_task", "alpha_ce", "T", "teacher_lr", "teacher_epochs"}
SIZE_SPEED_KEYS = {"enabled", "reference", "batch_size", "seq_length", "repeats", "warmup"}


def learning_rates(cfg: Mapping[str, Any], teacher: bool = False) -> list[float]:
    """``lr`` (or ``distillation.teacher_lr``) as a list: one value, or a grid searched on the validation split."""
    lr = cfg["distillation"].get("teacher_lr") if teacher else None
    lr = cfg["lr"] if lr is None else lr
    return list(lr) if isinstance(lr, (list, tuple)) else [lr]


def finetune_settings(cfg: Mapping[str, Any], teacher: bool = False) -> FinetuneSettings:
    """The fine-tuning hyper-parameters (the teacher's may override lr and epochs); ``lr`` is the grid's first."""
    distillation = cfg["distillation"]
    lr = learning_rates(cfg, teacher)[0]
    epochs = (distillation.get("teacher_epochs") if teacher and distillation.get("teacher_epochs") is not None
              else cfg["epochs"])
    return FinetuneSettings(max_seq_length=cfg["max_seq_length"], batch_size=cfg["batch_size"],
                            eval_batch_size=cfg["eval_batch_size"], lr=lr, weight_decay=cfg["weight_decay"],
                            warmup_proportion=cfg["warmup_proportion"], max_grad_norm=cfg["max_grad_norm"],
                            epochs=epochs, seed=cfg["seed"], log_every=cfg["log_every"])


def speed_settings(cfg: Mapping[str, Any]) -> SpeedSettings:
    s = cfg["size_speed"]
    return SpeedSettings(batch_size=s["batch_size"], seq_length=s["seq_length"], repeats=s["repeats"],
                         warmup=s["warmup"])


def finetune_loss(cfg: Mapping[str, Any]) -> FinetuneLoss:
    """The student's loss: labels only, or labels + soft targets when a teacher is declared."""
    d = cfg["distillation"]
    if d.get("teacher_model") is None:
        return FinetuneLoss()
    return FinetuneLoss(alpha_task=d["alpha_task"], alpha_ce=d["alpha_ce"], temperature=d["T"])


def _unknown_keys(block: Any, allowed: set[str], key: str) -> None:
    if not isinstance(block, Mapping):
        raise ConfigError(key, f"{block!r} is not a mapping", ", ".join(sorted(allowed)))
    extra = set(block) - allowed
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key", ", ".join(sorted(allowed)))


def _check_learning_rates(value: Any, key: str) -> None:
    if isinstance(value, (list, tuple)):
        if not value or len(set(value)) != len(value):
            raise ConfigError(key, f"{value!r} is not a non-empty list of distinct values", "lr or [lr1, lr2, ...]")
        for i, lr in enumerate(value):
            _in_range(lr, f"{key}[{i}]", 0.0, 1.0, low_open=True)
    else:
        _in_range(value, key, 0.0, 1.0, low_open=True)


def validate_finetune_config(cfg: Mapping[str, Any]) -> None:
    tasks = cfg["tasks"]
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError("tasks", f"{tasks!r} is not a non-empty list of task names", "e.g. [mr_sentiment, bbc_topics]")
    for name in tasks:
        check_task_name(name)
    if len(set(tasks)) != len(tasks):
        raise ConfigError("tasks", f"{list(tasks)} names a task twice", "each task once")
    model = cfg["model"]
    if model is not None and (not isinstance(model, str) or not model):
        raise ConfigError("model", f"{model!r} is not a model name or directory", "a directory, catalogue name or null")
    run_id = cfg["distill_run_id"]
    if run_id is not None and (isinstance(run_id, bool) or not isinstance(run_id, (int, str))):
        raise ConfigError("distill_run_id", f"{run_id!r} is not a run id", "a Sacred run id (integer) or null")
    _unknown_keys(cfg["distill_db"], {"url", "name"}, "distill_db")

    _check_learning_rates(cfg["lr"], "lr")
    d = cfg["distillation"]
    _unknown_keys(d, DISTILLATION_KEYS, "distillation")
    if d.get("teacher_lr") is not None:
        _check_learning_rates(d["teacher_lr"], "distillation.teacher_lr")
    settings = finetune_settings(cfg)
    _positive_int(settings.max_seq_length, "max_seq_length", minimum=8)
    if settings.max_seq_length > 512:
        raise ConfigError("max_seq_length", f"{settings.max_seq_length} exceeds BERT's 512 positions", "8..512")
    _positive_int(settings.batch_size, "batch_size")
    _positive_int(settings.eval_batch_size, "eval_batch_size")
    _in_range(settings.weight_decay, "weight_decay", 0.0, 1.0)
    _in_range(settings.warmup_proportion, "warmup_proportion", 0.0, 1.0, high_open=True)
    _in_range(settings.max_grad_norm, "max_grad_norm", 0.0, float("inf"), low_open=True, high_open=True)
    _positive_int(settings.epochs, "epochs")
    _positive_int(settings.log_every, "log_every")
    _positive_int(cfg["seed"], "seed", minimum=0)
    _positive_int(cfg["split_seed"], "split_seed", minimum=0)
    _positive_int(cfg["max_train_examples"], "max_train_examples", allow_none=True)
    _positive_int(cfg["max_eval_examples"], "max_eval_examples", allow_none=True)
    _positive_int(cfg["threads"], "threads", allow_none=True)

    teacher = d.get("teacher_model")
    if isinstance(teacher, Mapping):  # task -> a classifier already fine-tuned on it
        missing = [t for t in tasks if t not in teacher]
        if missing or set(teacher) - set(tasks):
            raise ConfigError("distillation.teacher_model", f"fine-tuned teachers given for {sorted(teacher)}, "
                              f"tasks are {list(tasks)}", "one directory per task in `tasks`")
        if not all(isinstance(v, str) and v for v in teacher.values()):
            raise ConfigError("distillation.teacher_model", "every fine-tuned teacher must be a directory", "paths")
    elif teacher is not None and (not isinstance(teacher, str) or not teacher):
        raise ConfigError("distillation.teacher_model", f"{teacher!r} is not a model", "null, a model name or "
                          "directory (fine-tuned first on each task), or {task: fine-tuned classifier directory}")
    if teacher is not None:
        finetune_loss(cfg)  # alpha_task, alpha_ce, T
        _positive_int(d.get("teacher_epochs"), "distillation.teacher_epochs", allow_none=True)

    s = cfg["size_speed"]
    _unknown_keys(s, SIZE_SPEED_KEYS, "size_speed")
    if not isinstance(s["enabled"], bool):
        raise ConfigError("size_speed.enabled", f"{s['enabled']!r} is not a boolean", "true, false")
    if s["reference"] is not None and (not isinstance(s["reference"], str) or not s["reference"]):
        raise ConfigError("size_speed.reference", f"{s['reference']!r} is not a model", "null or a model name/directory")
    _positive_int(s["batch_size"], "size_speed.batch_size")
    _positive_int(s["seq_length"], "size_speed.seq_length")
    if s["seq_length"] > 512:
        raise ConfigError("size_speed.seq_length", f"{s['seq_length']} exceeds BERT's 512 positions", "1..512")
    _positive_int(s["repeats"], "size_speed.repeats")
    _positive_int(s["warmup"], "size_speed.warmup", minimum=0)
