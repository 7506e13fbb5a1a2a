"""One evaluation run: fine-tune the model on each task, score the test split, average like GLUE, and report size
and speed against a reference (the teacher). The finetune experiment is a thin Sacred wrapper around
:class:`DownstreamEvaluation`, which takes the parsed :class:`~kd_plugin.downstream.finetune_config.FinetuneConfig`;
this module knows nothing of Sacred beyond the ``log_scalar`` callable and the ``info`` dict it is given.

Metrics logged (name, step): ``<task>/train_loss`` (and ``<task>/train_loss_task`` / ``_ce`` with a teacher) every
``log_every`` steps, ``<task>/validation_accuracy`` per epoch, ``<task>/test_accuracy``, ``macro_accuracy``;
with a teacher also ``<task>/teacher_test_accuracy`` and ``teacher_macro_accuracy``. With a learning-rate grid
(``lr`` a list) the training metrics of each try are under ``<task>/lr<value>/...``; the model with the best
validation accuracy is the one scored on the test split (the test split never chooses anything).

When the evaluated model is a folder with a kd_plugin model card (an exported student), a successful run adds its
scores (per-task accuracy, macro average, this run's id, the speed-up) to that card
(:func:`kd_plugin.export.model_card.add_downstream_results`); a card that cannot be updated is a warning, never
a failed evaluation.
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict

from kd_plugin.downstream.finetune_config import FinetuneConfig
from kd_plugin.downstream.finetuning import encode, evaluate, predict_logits, train
from kd_plugin.downstream.metrics import macro_average
from kd_plugin.downstream.model_loading import (
    LoadedModel,
    load_classifier,
    load_finetuned_classifier,
    resolve_model,
)
from kd_plugin.downstream.run_link import ResolvedModel, resolve_evaluated_model
from kd_plugin.downstream.size_speed import compare
from kd_plugin.downstream.tasks import label_names, load_task
from kd_plugin.export.model_card import add_downstream_results
from kd_plugin.teacher_catalogue import TeacherSource

LogScalar = Callable[..., None]


def _truncate(data: DatasetDict, max_train: int | None, max_eval: int | None) -> DatasetDict:
    """The first N rows of each split (splits are in hash order, so that is a random sample)."""
    limits = {"train": max_train, "validation": max_eval, "test": max_eval}
    return DatasetDict({k: v.select(range(min(len(v), limits[k]))) if limits[k] else v for k, v in data.items()})


class DownstreamEvaluation:
    def __init__(self, config: FinetuneConfig, log_scalar: LogScalar | None = None, info: dict | None = None,
                 output_dir: Path | None = None, run_id: Any = None):
        self.config = config
        self.run_id = run_id  # the tracker's id of this evaluation run: named in the student's model card
        self.log_scalar = log_scalar or (lambda name, value, step=None: None)
        self.info = info if info is not None else {}
        self.output_dir = output_dir
        self.training = config.training
        self.loss_fn = config.distillation.loss()
        self.teacher = config.distillation.teacher_model

    # ------------------------------------------------------------------ one task
    def _fit(self, task: str, source: TeacherSource, data: DatasetDict, names: list[str], teacher: bool,
             teacher_logits: torch.Tensor | None = None) -> tuple[LoadedModel, dict[str, Any]]:
        """Fine-tune a fresh classifier per learning rate; keep the one with the best validation accuracy.

        With one learning rate (the default) this is plain fine-tuning. The test split is never looked at here.
        """
        training = self.config.teacher_training if teacher else self.training
        lrs = training.learning_rates
        key = "distillation.teacher_model" if teacher else "model"
        role = "teacher_" if teacher else ""
        best: tuple[float, LoadedModel, dict[str, Any]] | None = None
        grid: dict[str, float] = {}
        for lr in lrs:
            loaded = load_classifier(source, names, training.seed, key=key)
            encoded = {k: encode(data[k], loaded, training.max_seq_length) for k in ("train", "validation")}
            prefix = f"{task}/{role}" + (f"lr{lr:g}/" if len(lrs) > 1 else "")
            summary = train(loaded, encoded["train"], training.at(lr),
                            None if teacher else self.loss_fn, teacher_logits,
                            validation=encoded["validation"], log=self.log_scalar, prefix=prefix)
            summary.update(lr=lr, newly_initialised=loaded.newly_initialised)
            validation = summary["validation_accuracy_per_epoch"][-1]
            grid[f"{lr:g}"] = validation
            if best is None or validation > best[0]:
                best = (validation, loaded, summary)
            del loaded, encoded
            gc.collect()
        _, loaded, summary = best
        if len(lrs) > 1:
            summary["lr_grid_validation_accuracy"] = grid
            print(f"  {task}/{role}lr chosen on validation: {summary['lr']:g} ({grid})")
        return loaded, summary

    def _teacher_for(self, task: str, data: DatasetDict, names: list[str]) -> LoadedModel:
        """The task's teacher: a given fine-tuned classifier, or the teacher model fine-tuned here first."""
        if isinstance(self.teacher, Mapping):
            return load_finetuned_classifier(self.teacher[task], names, key=f"distillation.teacher_model.{task}")
        print(f"[finetune] {task}: fine-tuning the teacher {self.teacher!r} first")
        source = resolve_model(self.teacher, "distillation.teacher_model")
        teacher, _ = self._fit(task, source, data, names, teacher=True)
        return teacher

    def run_task(self, task: str, model: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        splits = self.config.splits
        data = _truncate(load_task(task, splits.split_seed), splits.max_train_examples, splits.max_eval_examples)
        names = label_names(data)
        result: dict[str, Any] = {"n_labels": len(names), "labels": names,
                                  **{f"n_{split}": len(data[split]) for split in ("train", "validation", "test")}}
        batch, max_len = self.training.eval_batch_size, self.training.max_seq_length
        teacher_logits = None
        if self.teacher is not None:
            teacher = self._teacher_for(task, data, names)
            teacher_logits = predict_logits(teacher, encode(data["train"], teacher, max_len), batch)  # (n_train, n_labels)
            result["teacher_accuracy"] = evaluate(teacher, encode(data["test"], teacher, max_len), batch)
            self.log_scalar(f"{task}/teacher_test_accuracy", result["teacher_accuracy"])
            del teacher
            gc.collect()

        loaded, summary = self._fit(task, resolve_model(model), data, names, teacher=False,
                                    teacher_logits=teacher_logits)
        result["accuracy"] = evaluate(loaded, encode(data["test"], loaded, max_len), batch)
        self.log_scalar(f"{task}/test_accuracy", result["accuracy"])
        result.update(validation_accuracy=summary["validation_accuracy_per_epoch"][-1], **summary,
                      seconds=time.perf_counter() - t0)
        if self.config.save_models and self.output_dir is not None:
            target = self.output_dir / "models" / task
            loaded.model.save_pretrained(target)
            loaded.tokenizer.save_pretrained(target)
            result["model_dir"] = str(target.resolve())
        return result

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        threads = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        resolved: ResolvedModel = resolve_evaluated_model(self.config.source)
        self.info.update(resolved.info())
        print(f"[finetune] model {resolved.model!r}; distill run {resolved.distill_run_id!r} ({resolved.lookup})")
        tasks: dict[str, dict[str, Any]] = {}
        for task in self.config.tasks:
            print(f"[finetune] task {task}")
            tasks[task] = self.run_task(task, resolved.model)
            line = f"[finetune] {task}: test accuracy {tasks[task]['accuracy']:.4f}"
            if "teacher_accuracy" in tasks[task]:
                line += f" (teacher {tasks[task]['teacher_accuracy']:.4f})"
            print(line + f" in {tasks[task]['seconds']:.1f}s")
            self.info["tasks"] = tasks  # partial results survive a crash in a later task
        result: dict[str, Any] = {
            "model": resolved.model,
            "distill_run_id": resolved.distill_run_id,
            "tasks": tasks,
            "macro_accuracy": macro_average({t: r["accuracy"] for t, r in tasks.items()}),
        }
        self.log_scalar("macro_accuracy", result["macro_accuracy"])
        if self.teacher is not None:
            result["teacher_macro_accuracy"] = macro_average({t: r["teacher_accuracy"] for t, r in tasks.items()})
            result["retained_fraction"] = result["macro_accuracy"] / result["teacher_macro_accuracy"]
            self.log_scalar("teacher_macro_accuracy", result["teacher_macro_accuracy"])
        print(f"[finetune] macro accuracy {result['macro_accuracy']:.4f}")
        result["finetune_seconds"] = time.perf_counter() - t0
        if self.config.size_speed.enabled:
            result["size_speed"] = self.size_speed(resolved)
            self.info["size_speed"] = result["size_speed"]
        result["wall_seconds"] = time.perf_counter() - t0
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
            result["output_dir"] = str(self.output_dir.resolve())
        self.update_model_card(resolved.model, result)
        return result

    def downstream_scores(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """What the student's model card records of this run (see :class:`kd_plugin.export.StudentCard`)."""
        scores: dict[str, Any] = {
            "tasks": {task: r["accuracy"] for task, r in result["tasks"].items()},
            "macro": result["macro_accuracy"],
            "run_id": self.run_id,
            "settings": {key: value for key, value in self._card_settings().items() if value is not None},
        }
        if "teacher_macro_accuracy" in result:
            scores["teacher_macro"] = result["teacher_macro_accuracy"]
            teacher = dict(self.teacher) if isinstance(self.teacher, Mapping) else self.teacher
            scores["settings"]["distillation.teacher_model"] = str(teacher)
        return scores

    def _card_settings(self) -> dict[str, Any]:
        """The settings a reader of the card needs to compare scores, under the config's keys."""
        lrs = self.training.learning_rates
        return {"epochs": self.training.epochs, "lr": lrs[0] if len(lrs) == 1 else list(lrs),
                "max_train_examples": self.config.splits.max_train_examples,
                "max_eval_examples": self.config.splits.max_eval_examples,
                "split_seed": self.config.splits.split_seed}

    def update_model_card(self, model: str, result: Mapping[str, Any]) -> None:
        """Add this run's scores to ``model``'s kd_plugin model card, if it has one; warn if that fails."""
        speed = result.get("size_speed") or {}
        try:
            path = add_downstream_results(model, self.downstream_scores(result), speed_up=speed.get("speedup"),
                                          speed_up_reference=(speed.get("teacher") or {}).get("name"))
        except Exception as exc:  # the card is a by-product: the evaluation's results stand without it
            warnings.warn(f"the model card of {model} was not updated: {type(exc).__name__}: {exc}", stacklevel=2)
            return
        if path is not None:
            self.info["model_card"] = str(path)
            print(f"[finetune] scores added to the model card {path}")

    def size_speed_reference(self, resolved: ResolvedModel) -> str | None:
        """``size_speed.reference``, else the distillation teacher, else the distill run's teacher."""
        reference = self.config.size_speed.reference
        if reference is None and isinstance(self.teacher, str):
            reference = self.teacher
        if reference is None and resolved.distill_run is not None:
            reference = resolved.distill_run.teacher
        return reference

    def size_speed(self, resolved: ResolvedModel) -> dict[str, Any]:
        reference = self.size_speed_reference(resolved)
        report = compare(resolved.model, reference, self.config.size_speed.speed)
        line = (f"[finetune] size/speed: {report['student']['parameters']['total']:,} parameters, "
                f"{report['student']['sequences_per_second']:.1f} sequences/s")
        if reference is not None:
            line += (f"; reference {reference!r}: {report['teacher']['parameters']['total']:,} parameters, "
                     f"{report['teacher']['sequences_per_second']:.1f} sequences/s; speed-up {report['speedup']:.2f}x")
        print(line)
        return report
