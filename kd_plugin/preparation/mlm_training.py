"""Prepare a teacher: fit its masked-LM head, then the whole model, on the corpus; measure before and after.

The path of one preparation (:func:`prepare_teacher`)::

    base teacher (catalogue name / local dir; a fresh BertForMaskedLM head when it has none, decoder tied to
    the word embeddings) -> tokenized, cached corpus (train / held-out) -> masked-token accuracy BEFORE
    -> phase "head": ``train_head_only_steps`` AdamW steps on the head only (encoder and embeddings frozen)
    -> phase "full": ``steps`` AdamW steps on every weight -> accuracy AFTER
    -> <cache_root>/<teacher>-prepared-<key>/ (save_pretrained model + tokenizer, preparation.json)

A plain PyTorch loop: a one-off fit of a small model on one process, not the distillation trainer. Each phase
has its own AdamW and linear warm-up / linear decay schedule. The loss is the masked-LM cross-entropy over the
selected positions, the vocabulary projection computed on those positions only
(:func:`kd_plugin.evaluation.masked_position_logits`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kd_plugin.config.optim import OptimSettings
from kd_plugin.data import LengthGroupedBatchSampler, build_tokenized_corpus, collate_batch, load_corpus
from kd_plugin.evaluation import masked_lm_accuracy, masked_position_logits
from kd_plugin.masking import IGNORE_INDEX, DynamicMasker
from kd_plugin.optimization import linear_warmup_decay, parameter_groups
from kd_plugin.preparation.cache import corpus_fingerprint, locate, read_record, say
from kd_plugin.preparation.preparation_config import PreparationConfig, TrainingPhase
from kd_plugin.preparation.recipes import RECORD_FILE
from kd_plugin.runtime.progress import progress_line
from kd_plugin.teacher_catalogue import TeacherSource, resolve_teacher

logger = logging.getLogger(__name__)

LogScalar = Callable[[str, float, int], None]


# ------------------------------------------------------------------------------------------------ model


def load_base_teacher(source: TeacherSource, seed: int) -> tuple[torch.nn.Module, Any, bool]:
    """(BertForMaskedLM in train mode, tokenizer, head_initialised).

    A model without an MLM head (all-MiniLM-L6-v2 is a ``BertModel``) gets a fresh ``cls.predictions`` head,
    initialised from ``seed`` (``initializer_range``), its decoder tied to the input word embeddings.
    """
    import transformers
    from transformers import AutoTokenizer, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(source.path)
    torch.manual_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    if not source.has_mlm_head:
        transformers.logging.set_verbosity_error()  # the expected "MISSING cls.predictions.*" report: ours below
    try:
        model, info = BertForMaskedLM.from_pretrained(source.path, output_loading_info=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    head_initialised = any(k.startswith("cls.") for k in missing)
    if not all(k.startswith("cls.") for k in missing):
        raise RuntimeError(f"{source.name}: encoder weights missing from the checkpoint: {missing}")
    if head_initialised:
        decoder, embeddings = model.cls.predictions.decoder.weight, model.bert.embeddings.word_embeddings.weight
        if decoder is not embeddings:
            raise RuntimeError(f"{source.name}: the fresh MLM decoder is not tied to the word embeddings")
        say(f"{source.name} has no masked-LM head: attached a fresh BertForMaskedLM head ({len(missing)} tensors "
            "initialised), decoder tied to the word embeddings")
    return model.train(), tokenizer, head_initialised


def head_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The MLM head's own parameters (transform dense + LayerNorm, output bias), not the tied embeddings."""
    embeddings = model.get_input_embeddings().weight
    seen, out = {id(embeddings)}, []
    for name, param in model.cls.named_parameters(prefix="cls"):
        if id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    return out


def set_trainable(model: torch.nn.Module, phase: str) -> list[tuple[str, torch.nn.Parameter]]:
    """Freeze everything but the head (``phase="head"``) or nothing (``"full"``); return the trainable params."""
    if phase == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return list(model.named_parameters())
    for param in model.parameters():
        param.requires_grad_(False)
    params = head_parameters(model)
    for _, param in params:
        param.requires_grad_(True)
    return params


def build_optimizer(params: list[tuple[str, torch.nn.Parameter]], optim: OptimSettings, steps: int):
    """The distillation engine's recipe (:mod:`kd_plugin.optimization`): AdamW at ``optim.lr`` without weight decay
    on biases and layer-norm weights, linear warm-up then linear decay to 0 (transformers' schedule)."""
    optimizer = torch.optim.AdamW(parameter_groups(params, optim.weight_decay, optim.no_decay), lr=optim.lr,
                                  betas=optim.betas, eps=optim.eps)
    return optimizer, linear_warmup_decay(steps, optim.warmup_proportion)(optimizer)


# ------------------------------------------------------------------------------------------------ data


def masked_batches(train, tokenizer, masker: DynamicMasker, batch_size: int, seed: int
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless (input_ids, attention_mask, labels), each (bs, seq_len): length-grouped, freshly masked."""
    sampler = LengthGroupedBatchSampler(train.data.column("length").to_numpy(), batch_size, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    while True:
        for indices in sampler:
            batch = collate_batch([{"input_ids": ids} for ids in train[indices]["input_ids"]], tokenizer.pad_token_id)
            input_ids, labels = masker.mask(batch["input_ids"], batch["attention_mask"], generator)
            yield input_ids, batch["attention_mask"], labels


def mlm_loss(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
             ) -> tuple[torch.Tensor, int, int]:
    """(mean cross-entropy over the masked positions, n_correct, n_masked)."""
    selected = labels != IGNORE_INDEX  # (bs, seq_len)
    logits = masked_position_logits(model, input_ids, attention_mask, selected)  # (n_sel, vocab_size)
    gold = labels[selected]  # (n_sel,)
    loss = F.cross_entropy(logits.float(), gold)
    return loss, int((logits.argmax(-1) == gold).sum()), int(gold.numel())


def train_phase(model, batches, phase: TrainingPhase, *, desc: str, log_scalar: LogScalar | None, log_every: int,
                step_offset: int, progress_bar: bool) -> dict[str, Any]:
    """``phase.steps`` optimizer steps of masked-LM training on the phase's parameters ("head" or "full")."""
    steps, optim = phase.steps, phase.optim
    params = set_trainable(model, phase.name)
    optimizer, scheduler = build_optimizer(params, optim, steps)
    trainable = [p for _, p in params]
    model.train()
    started = time.perf_counter()
    window = {"loss": 0.0, "correct": 0, "masked": 0, "n": 0}
    last: dict[str, float] = {}
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress_bar, dynamic_ncols=True)
    for step in range(1, steps + 1):
        input_ids, attention_mask, labels = next(batches)
        loss, correct, masked = mlm_loss(model, input_ids, attention_mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        window["loss"] += float(loss.detach())
        window["correct"] += correct
        window["masked"] += masked
        window["n"] += 1
        if step % log_every == 0 or step == steps:
            last = {"loss": window["loss"] / window["n"], "accuracy": window["correct"] / max(1, window["masked"]),
                    "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)}
            if log_scalar is not None:
                for name, value in last.items():
                    log_scalar(f"{phase.name}.{name}", value, step_offset + step)
            window = {"loss": 0.0, "correct": 0, "masked": 0, "n": 0}
            if not progress_bar:
                logger.info(progress_line(desc, step, steps, 0, time.perf_counter() - started, last))
            bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.3f}")
        bar.update(1)
    bar.close()
    for param in model.parameters():
        param.requires_grad_(True)
    return {"steps": steps, "wall_seconds": time.perf_counter() - started, "final_window": last}


# ------------------------------------------------------------------------------------------------ the run


def prepare_teacher(config: PreparationConfig, log_scalar: LogScalar | None = None,
                    info: dict[str, Any] | None = None, run_id: Any = None) -> dict[str, Any]:
    """Run one preparation (see experiments/prepare_teacher.py); returns the result."""
    started, cpu_started, load_started = time.perf_counter(), time.process_time(), _load_average()
    info = info if info is not None else {}
    recipe, data, teacher = config.recipe, config.data, config.teacher
    source = resolve_teacher(teacher)
    where = locate(teacher, recipe, config.cache_root, fingerprint=corpus_fingerprint(recipe["data"]))
    target = config.output_dir or where.directory
    info.update(prepared_dir=str(target), key=where.key, teacher_source=where.teacher_source)
    if (target / RECORD_FILE).is_file() and not config.overwrite:
        say(f"{target} already holds this preparation (overwrite=True to redo it); nothing to do")
        return dict(read_record(target)["result"], reused=True)

    model, tokenizer, head_initialised = load_base_teacher(source, config.seed)
    corpus = load_corpus(data.corpus, sample_by=data.sample_by)
    if data.max_documents:
        corpus = corpus.select(range(min(data.max_documents, len(corpus))))
    tokenized = build_tokenized_corpus(corpus, tokenizer, data.max_seq_length, data.cache_dir, data.held_out_fraction)
    if len(tokenized.held_out) == 0:
        raise RuntimeError("the held-out split is empty: raise data.held_out_fraction or data.max_documents")
    evaluation = config.evaluation

    def evaluate(moment: str, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        result = masked_lm_accuracy(model, tokenized.held_out, tokenizer, max_sequences=evaluation.max_sequences,
                                    batch_size=evaluation.batch_size, seed=evaluation.seed,
                                    progress=config.progress_bar, desc=f"held-out accuracy {moment}")
        result["wall_seconds"] = time.perf_counter() - t0
        say(f"held-out masked-token accuracy {moment}: {100 * result['accuracy']:.2f}% "
            f"(loss {result['loss']:.3f}, {result['n_masked']} masked tokens in {result['n_sequences']} sequences)")
        if log_scalar is not None:
            log_scalar("eval.accuracy", result["accuracy"], step)
            log_scalar("eval.loss", result["loss"], step)
        return result

    accuracy = {"before": evaluate("before (as shipped" + (", fresh head)" if head_initialised else ")"), 0)}
    info["accuracy"] = accuracy
    batches = masked_batches(tokenized.train, tokenizer, DynamicMasker(
        config.masking, vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id, special_token_ids=tokenizer.all_special_ids,
        token_counts=tokenized.token_counts), config.batch_size, config.seed)
    phases: dict[str, Any] = {}
    common = {"log_scalar": log_scalar, "log_every": config.log_every, "progress_bar": config.progress_bar}
    head_steps, full_steps = config.head.steps, config.full.steps
    if head_steps:
        phases["head"] = train_phase(model, batches, config.head, desc=f"prepare {source.name}: MLM head only",
                                     step_offset=0, **common)
        if full_steps:
            accuracy["after_head"] = evaluate("after the head-only phase", head_steps)
    if full_steps:
        phases["full"] = train_phase(model, batches, config.full, desc=f"prepare {source.name}: full model",
                                     step_offset=head_steps, **common)
    accuracy["after"] = evaluate("after", head_steps + full_steps)
    model.eval()

    result = {
        "teacher": teacher,
        "prepared_dir": str(target.resolve()),
        "key": where.key,
        "accuracy_before": accuracy["before"]["accuracy"],
        "accuracy_after": accuracy["after"]["accuracy"],
        "loss_before": accuracy["before"]["loss"],
        "loss_after": accuracy["after"]["loss"],
        "head_initialised": head_initialised,
        "steps": {"head": head_steps, "full": full_steps},
        "train_seconds": {name: phase["wall_seconds"] for name, phase in phases.items()},
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }
    record = {
        "experiment": "prepare_teacher",
        "sacred_run_id": run_id,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "teacher": teacher,
        "teacher_source": where.teacher_source,
        "corpus_fingerprint": where.corpus_fingerprint,
        "key": where.key,
        "recipe": dict(recipe),
        "config": {k: v for k, v in config.raw.items() if k != "tracking"},  # no database URL in the cache
        "accuracy": accuracy,
        "phases": phases,
        "data": dict(tokenized.stats, cache=str(tokenized.cache_path)),
        "versions": _versions(),
        # wall time depends on what else runs: the load average says how busy the machine was
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_start": load_started, "load_average_end": _load_average()},
        "result": result,
    }
    write_prepared(model, tokenizer, record, target)
    info["result"] = result
    say(f"prepared teacher written to {target} ({result['wall_seconds']:.0f} s wall, "
        f"{result['cpu_seconds']:.0f} s CPU, load average {record['machine']['load_average_start']})")
    return result


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def _versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def write_prepared(model, tokenizer, record: dict[str, Any], target: Path) -> None:
    """save_pretrained into a temporary sibling, preparation.json last, then rename into place (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))
        if target.exists():  # overwrite=True, or an incomplete leftover
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
