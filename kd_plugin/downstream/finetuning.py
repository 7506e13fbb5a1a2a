"""Fine-tune a sequence classifier on one task and predict with it: the GLUE-style downstream protocol.

Plain PyTorch on purpose: the models evaluated here are small, one process suffices, and the loop is the
textbook one with the project's optimizer recipe (:mod:`kd_plugin.optimization`: AdamW without decay on biases
and normalisation gains, linear warm-up over ``ceil(warmup_proportion * steps)`` steps then linear decay), gradient
clipping, a fixed number of epochs, the final model is evaluated: no early stopping on the test set). Inputs
are tokenized once with the fast tokenizer (batched), truncated to ``max_seq_length`` and padded per batch.
With a teacher's logits per training example the loss adds the soft-target term (:mod:`.distill_loss`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from datasets import Dataset

from kd_plugin.downstream.distill_loss import FinetuneLoss
from kd_plugin.downstream.metrics import accuracy
from kd_plugin.downstream.model_loading import LoadedModel
from kd_plugin.optimization import linear_warmup_decay, parameter_groups
from kd_plugin.runtime.progress import track

LogFn = Callable[[str, float, int], None]  # (metric name, value, step), e.g. Sacred's _run.log_scalar


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    """One fine-tuning's settings, each declared (default, doc, check) once in
    :class:`kd_plugin.downstream.finetune_config.TrainingSettings`, whose ``at(lr)`` makes them."""

    max_seq_length: int
    batch_size: int
    eval_batch_size: int
    lr: float
    weight_decay: float
    warmup_proportion: float
    max_grad_norm: float
    epochs: int
    seed: int
    log_every: int  # optimizer steps between logged training-loss points
    progress_bar: bool  # within each epoch: a tqdm bar, or a plain line per tenth (False)


@dataclass
class Encoded:
    """One split, tokenized: variable-length id lists and labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: torch.Tensor  # (n,)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(split: Dataset, loaded: LoadedModel, max_seq_length: int) -> Encoded:
    """Tokenize ``text`` (and ``text_pair``) in batches with truncation; no padding yet."""
    pairs = list(split["text_pair"]) if "text_pair" in split.column_names else None
    enc = loaded.tokenizer(list(split["text"]), pairs, truncation=True, max_length=max_seq_length,
                           return_token_type_ids=loaded.accepts_token_type_ids)
    return Encoded(enc["input_ids"], enc.get("token_type_ids") if loaded.accepts_token_type_ids else None,
                   torch.tensor(list(split["label"]), dtype=torch.long))


def collate(encoded: Encoded, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the chosen rows to their longest member."""
    width = max(len(encoded.input_ids[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (bs, width)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (bs, width)
    types = torch.zeros((len(rows), width), dtype=torch.long) if encoded.token_type_ids is not None else None
    for r, i in enumerate(rows):
        n = len(encoded.input_ids[i])
        ids[r, :n] = torch.tensor(encoded.input_ids[i])
        mask[r, :n] = 1
        if types is not None:
            types[r, :n] = torch.tensor(encoded.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def predict_logits(loaded: LoadedModel, encoded: Encoded, batch_size: int) -> torch.Tensor:
    """Class logits for every row, in row order (batches of similar length for speed). (n, n_labels)"""
    model = loaded.model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.input_ids[i]))
    out = torch.empty(len(encoded), model.config.num_labels)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = model(**collate(encoded, rows, loaded.tokenizer.pad_token_id)).logits.float()
    return out


def evaluate(loaded: LoadedModel, encoded: Encoded, batch_size: int) -> float:
    return accuracy(predict_logits(loaded, encoded, batch_size).argmax(-1), encoded.labels)


def train(
    loaded: LoadedModel,
    train_data: Encoded,
    settings: FinetuneSettings,
    loss_fn: FinetuneLoss | None = None,
    teacher_logits: torch.Tensor | None = None,  # (n_train, n_labels), row-aligned with train_data
    validation: Encoded | None = None,
    log: LogFn | None = None,
    prefix: str = "",
) -> dict[str, float | list[float]]:
    """Fine-tune ``loaded.model`` in place; returns the training summary (loss, per-epoch validation accuracy)."""
    loss_fn = loss_fn or FinetuneLoss()
    if loss_fn.uses_teacher and (teacher_logits is None or len(teacher_logits) != len(train_data)):
        raise ValueError("distillation needs one row of teacher logits per training example")
    model = loaded.model
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.lr)
    scheduler = linear_warmup_decay(total_steps, settings.warmup_proportion)(optimizer)
    pad_id = loaded.tokenizer.pad_token_id
    step, window, val_accuracies, start = 0, [], [], time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train_data), generator=generator).tolist()
        for b in track(range(steps_per_epoch), steps_per_epoch, f"  {prefix}epoch {epoch + 1}/{settings.epochs}",
                       settings.progress_bar, unit="step"):
            rows = order[b * settings.batch_size:(b + 1) * settings.batch_size]
            logits = model(**collate(train_data, rows, pad_id)).logits  # (bs, n_labels)
            t_logits = teacher_logits[rows] if loss_fn.uses_teacher else None  # (bs, n_labels)
            loss, parts = loss_fn(logits, train_data.labels[rows], t_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            window.append(dict(parts, loss=loss.item()))
            if log and (step % settings.log_every == 0 or step == total_steps):
                for name in window[0]:
                    log(f"{prefix}train_{name}" if name == "loss" else f"{prefix}train_loss_{name}",
                        sum(w[name] for w in window) / len(window), step)
            if step % settings.log_every == 0:
                window = []
        if validation is not None and len(validation):
            val_accuracies.append(evaluate(loaded, validation, settings.eval_batch_size))
            if log:
                log(f"{prefix}validation_accuracy", val_accuracies[-1], step)
        print(f"  {prefix}epoch {epoch + 1}/{settings.epochs}: loss {loss.item():.4f}"
              + (f", validation accuracy {val_accuracies[-1]:.4f}" if val_accuracies else "")
              + f" ({time.perf_counter() - start:.1f}s)")
    return {"steps": step, "final_loss": loss.item(), "validation_accuracy_per_epoch": val_accuracies,
            "train_seconds": time.perf_counter() - start}
