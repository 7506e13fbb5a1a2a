"""The DeepSpeed distillation trainer: data -> masking -> teacher/student -> loss mixture -> engine step.

The trainer knows no loss term by name: the mixture (built from the registry) returns ``{"loss_<term>": ...,
"loss": total}`` and every entry is logged. One call, ``DistillationTrainer(cfg, ...).run()``, is what the
Sacred experiment's main function does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import DistilBertForMaskedLM

from kd_plugin.data import LengthGroupedBatchSampler, build_tokenized_corpus, collate_batch, load_corpus
from kd_plugin.losses import LossMixture, ModelDims
from kd_plugin.masking import DynamicMasker, MaskingConfig
from kd_plugin.student import build_student
from kd_plugin.student.dropout import set_dropout
from kd_plugin.teacher_catalogue import load_teacher, resolve_teacher
from kd_plugin.training import checkpointing
from kd_plugin.training.distillation_module import DistillationModule, freeze_teacher
from kd_plugin.training.ds_config import build_ds_config, load_ds_json, plan_batches, precision_of
from kd_plugin.training.launch_env import ensure_launch_env
from kd_plugin.training.optimization import linear_warmup_decay, parameter_groups
from kd_plugin.training.run_config import mixture_declaration, validate_distill_config
from kd_plugin.training.step_metrics import AccumulationWindow, ThrottledLogger

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
STEP_TAG = "step{:08d}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_generator(seed: int, epoch: int, global_index: int) -> torch.Generator:
    """A masking RNG that depends only on the batch's place in the data order, not on rank or history, so a
    resumed run and a run on more ranks mask every batch exactly as an uninterrupted one-rank run."""
    state = np.random.SeedSequence([seed, epoch, global_index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (bs, seq_len), after masking
    attention_mask: torch.Tensor  # (bs, seq_len)
    labels: torch.Tensor  # (bs, seq_len), -100 where not masked
    n_tokens: int


@dataclass
class TrainingState:
    step: int = 0
    tokens_seen: int = 0
    last_loss: float | None = None


class DistillationTrainer:
    def __init__(
        self,
        cfg: dict[str, Any],
        log_scalar: Callable[[str, float, int], None] | None = None,
        info: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.launch = ensure_launch_env()
        validate_distill_config(cfg, self.launch.world_size)
        self.log_scalar = log_scalar if self.launch.is_main else None
        self.info = info if info is not None else {}
        self.ds_json = load_ds_json(cfg["deepspeed_config"])
        self.precision = precision_of(self.ds_json)
        self.plan = plan_batches(
            cfg["batch"]["micro_batch_size"],
            cfg["batch"]["gradient_accumulation_steps"],
            cfg["batch"]["effective_batch_size"],
            self.launch.world_size,
        )

    # ------------------------------------------------------------------ set-up
    def _init_distributed(self) -> None:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else None)

    def _resolve_output_dir(self) -> None:
        """``output_dir`` or a fresh ``outputs/distill/<time>-<config hash>``, chosen on rank 0 for all ranks."""
        chosen = [self.cfg.get("output_dir")]
        if chosen[0] is None:
            digest = hashlib.sha256(json.dumps(self.cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]
            chosen = [str(PROJECT_ROOT / "outputs" / "distill" / f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}")]
            if dist.is_initialized() and dist.get_world_size() > 1:
                dist.broadcast_object_list(chosen, src=0)
        self.output_dir = Path(chosen[0])
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.info["output_dir"] = str(self.output_dir.resolve())

    def _barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def _build_models(self) -> None:
        cfg = self.cfg
        attn = "eager" if "attentions" in self.declaration_needs() else None
        self.teacher_source = resolve_teacher(cfg["teacher"])
        teacher, self.tokenizer = load_teacher(self.teacher_source, seed=cfg["seed"], attn_implementation=attn)
        student_cfg = cfg["student"]
        student, self.student_summary = build_student(
            teacher,
            student_cfg["layers"],
            student_cfg["n_layers"],
            fold_token_type_embedding=student_cfg["fold_token_type_embedding"],
            seed=cfg["seed"],
        )
        if attn:
            student.set_attn_implementation(attn)
            for layer in student.distilbert.transformer.layer:
                layer.attention.dropout.p = 0.0  # attention_kl compares probabilities: none may be dropped
        if student_cfg.get("dropout") is not None:
            set_dropout(student, student_cfg["dropout"])
        dims = ModelDims(
            student_hidden_size=student.config.dim,
            teacher_hidden_size=teacher.config.hidden_size,
            student_layers=student.config.n_layers,
            teacher_layers=teacher.config.num_hidden_layers,
            student_heads=student.config.n_heads,
            teacher_heads=teacher.config.num_attention_heads,
        )
        mixture = LossMixture(mixture_declaration(cfg), dims)
        self.teacher = freeze_teacher(teacher, DTYPES[self.precision])
        student.train()
        self.module = DistillationModule(student, mixture, self.teacher)

    def declaration_needs(self) -> set[str]:
        from kd_plugin.losses import LOSS_TERMS

        return set().union(*(LOSS_TERMS.get(n).needs for n in mixture_declaration(self.cfg).active))

    def _build_data(self) -> None:
        cfg, data = self.cfg, self.cfg["data"]
        # Rank 0 tokenizes and fills the cache; the other ranks then open it.
        if not self.launch.is_main:
            self._barrier()
        corpus = load_corpus(data["corpus"], sample_by=data.get("sample_by", "line"))
        if data.get("max_documents"):
            corpus = corpus.select(range(min(data["max_documents"], len(corpus))))
        self.corpus = build_tokenized_corpus(
            corpus, self.tokenizer, data["max_seq_length"], data["cache_dir"], data["held_out_fraction"]
        )
        if self.launch.is_main:
            self._barrier()
        tok = self.tokenizer
        self.masker = DynamicMasker(
            MaskingConfig(**cfg["masking"]),
            vocab_size=len(tok),
            mask_token_id=tok.mask_token_id,
            pad_token_id=tok.pad_token_id,
            special_token_ids=tok.all_special_ids,
            token_counts=self.corpus.token_counts,
        )
        self.sampler = LengthGroupedBatchSampler(
            self.corpus.lengths("train"),
            self.plan.micro_batch_size,
            seed=cfg["seed"],
            num_replicas=self.launch.world_size,
            rank=self.launch.rank,
        )
        if cfg["max_steps"] is not None:
            self.total_steps = cfg["max_steps"]
        else:
            self.total_steps = max(1, math.ceil(cfg["epochs"] * len(self.sampler) / self.plan.gradient_accumulation_steps))

    def _build_engine(self) -> None:
        import deepspeed

        self.ds_config = build_ds_config(self.ds_json, self.plan, self.cfg["optim"])
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.module,
            model_parameters=parameter_groups(self.module, self.cfg["optim"]["weight_decay"]),
            config=self.ds_config,
            lr_scheduler=linear_warmup_decay(self.total_steps, self.cfg["optim"]["warmup_proportion"]),
        )
        self.teacher.to(self.engine.device)  # outside the engine, so it is moved by hand
        self.info["deepspeed_config"] = self.ds_config
        self.info["engine"] = {
            "train_batch_size": self.engine.train_batch_size(),
            "micro_batch_size": self.engine.train_micro_batch_size_per_gpu(),
            "gradient_accumulation_steps": self.engine.gradient_accumulation_steps(),
            "world_size": self.launch.world_size,
            "zero_stage": self.engine.zero_optimization_stage(),
            "precision": self.precision,
            "optimizer": type(getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)).__name__,
            "total_steps": self.total_steps,
        }
        if self.engine.train_batch_size() != self.plan.train_batch_size:  # micro x accumulation x world
            raise RuntimeError(f"DeepSpeed train batch {self.engine.train_batch_size()} != planned "
                               f"{self.plan.train_batch_size} (micro x accumulation x world size)")

    # ------------------------------------------------------------------ data stream
    def micro_batches(self) -> Iterator[MicroBatch]:
        """Endless length-grouped micro-batches (epoch after epoch), masked per batch position."""
        train = self.corpus.train
        while True:
            for indices in self.sampler:
                epoch, local = self.sampler.epoch, self.sampler.batches_consumed - 1
                global_index = local * self.launch.world_size + self.launch.rank
                batch = collate_batch([{"input_ids": ids} for ids in train[indices]["input_ids"]],
                                      self.tokenizer.pad_token_id)
                input_ids, labels = self.masker.mask(
                    batch["input_ids"], batch["attention_mask"], batch_generator(self.cfg["seed"], epoch, global_index)
                )
                yield MicroBatch(input_ids, batch["attention_mask"], labels, int(batch["attention_mask"].sum()))

    def _append_local_metrics(self, record: dict[str, float]) -> None:
        """A plain local copy of every logged point (``<output_dir>/metrics.jsonl``), independent of any tracker."""
        if self.launch.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ checkpoints
    @property
    def resume_plan(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {
            "world_size": self.launch.world_size,
            "micro_batch_size": self.plan.micro_batch_size,
            "gradient_accumulation_steps": self.plan.gradient_accumulation_steps,
            "seed": self.cfg["seed"],
            "total_steps": self.total_steps,
            "corpus_cache": self.corpus.cache_path.name,
        }

    def save_checkpoint(self, state: TrainingState) -> None:
        client = checkpointing.client_state(state.step, self.sampler.state_dict(), state.tokens_seen, self.resume_plan)
        self.engine.save_checkpoint(str(self.checkpoint_dir), tag=STEP_TAG.format(state.step), client_state=client)

    def maybe_resume(self, state: TrainingState) -> None:
        resume = self.cfg.get("resume")
        if not resume:
            return
        path, client = self.engine.load_checkpoint(str(checkpointing.find_checkpoint_dir(resume)))
        if path is None:
            raise RuntimeError(f"resume={resume!r}: DeepSpeed could not load the checkpoint")
        checkpointing.check_compatible(client.get("kd_plan", {}), self.resume_plan)
        state.step = client["kd_step"]
        state.tokens_seen = client["kd_tokens_seen"]
        self.sampler.load_state_dict(client["kd_sampler"])
        checkpointing.restore_rng_state(client["kd_rng"][self.launch.rank])
        self.info["resumed_from"] = {"path": str(path), "step": state.step}
        logger.info("resumed from %s at step %d", path, state.step)

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainingState:
        state = TrainingState()
        self.maybe_resume(state)
        window = AccumulationWindow()
        stop_at = min(self.cfg.get("stop_at_step") or self.total_steps, self.total_steps)
        metrics_log = ThrottledLogger(self.log_scalar, self.cfg["log_every"], stop_at)
        progress = tqdm(total=self.total_steps, initial=state.step, desc="distill", unit="step",
                        disable=not (self.launch.is_main and self.cfg.get("progress_bar", True)), dynamic_ncols=True)
        checkpoint_every = self.cfg["checkpoint_every"]
        stream = self.micro_batches()
        while state.step < stop_at:
            mb = next(stream)
            lr = self.engine.get_lr()[0]  # the rate this optimizer step uses
            device = self.engine.device
            losses = self.engine(input_ids=mb.input_ids.to(device), attention_mask=mb.attention_mask.to(device),
                                 labels=mb.labels.to(device))
            self.engine.backward(losses["loss"])
            window.add(losses, mb.n_tokens)
            boundary = self.engine.is_gradient_accumulation_boundary()
            self.engine.step()
            if not boundary:
                continue
            state.step += 1
            means, tokens = window.reduce()
            state.tokens_seen += tokens
            grad_norm = self.engine.get_global_grad_norm()
            step_metrics = dict(means, lr=float(lr),
                                grad_norm=float(grad_norm) if grad_norm is not None else float("nan"))
            logged = metrics_log.step(state.step, step_metrics, tokens)
            if logged:
                self._append_local_metrics(dict(logged, step=state.step))
            progress.update(1)
            state.last_loss = means["loss"]
            postfix = {"loss": f"{means['loss']:.4f}"}
            if logged:
                postfix["tok/s"] = f"{logged['tokens_per_second']:.0f}"
            progress.set_postfix(postfix)
            if checkpoint_every and state.step % checkpoint_every == 0 and state.step < stop_at:
                self.save_checkpoint(state)
        progress.close()
        self.save_checkpoint(state)
        return state

    # ------------------------------------------------------------------ export
    def export_student(self, state: TrainingState) -> Path:
        """Write the student as a transformers directory from the fp32 master weights of the last checkpoint."""
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        target = self.output_dir / "student"
        self._barrier()
        if self.launch.is_main:
            tag = STEP_TAG.format(state.step)
            full = get_fp32_state_dict_from_zero_checkpoint(str(self.checkpoint_dir), tag=tag)
            student_state = {k[len("student."):]: v for k, v in full.items() if k.startswith("student.")}
            # A fresh model, never the engine's own module: under ZeRO-3 that one holds empty partitions.
            exported = DistilBertForMaskedLM(self.module.student.config)
            exported.load_state_dict(student_state, strict=True)
            exported.save_pretrained(target)
            self.tokenizer.save_pretrained(target)
            self.exported_student = exported.eval()
        self._barrier()
        return target

    def evaluate_held_out(self, step: int) -> dict[str, dict[str, float]]:
        """Masked-token accuracy of teacher and exported student on held-out documents (same fixed masks)."""
        from kd_plugin.evaluation.masked_lm import masked_lm_accuracy

        n = self.cfg.get("eval_max_sequences")
        if not self.launch.is_main or n == 0 or len(self.corpus.held_out) == 0:
            return {}
        scores = {}
        for name, model in (("teacher", self.teacher), ("student", self.exported_student)):
            scores[name] = masked_lm_accuracy(model.float().cpu(), self.corpus.held_out, self.tokenizer,
                                              max_sequences=n, seed=self.cfg["seed"])
            if self.log_scalar is not None:
                self.log_scalar(f"held_out_mlm_accuracy_{name}", scores[name]["accuracy"], step)
        logger.info("held-out masked-token accuracy: teacher %.3f, student %.3f",
                    scores["teacher"]["accuracy"], scores["student"]["accuracy"])
        return scores

    def run(self) -> dict[str, Any]:
        import datasets

        datasets.disable_progress_bars()  # the trainer logs the corpus statistics instead
        seed_everything(self.cfg["seed"])
        self._init_distributed()
        self._resolve_output_dir()
        t0 = time.perf_counter()
        self._build_models()
        self._build_data()
        self._build_engine()
        self.info["data"] = dict(self.corpus.stats, cache=str(self.corpus.cache_path), from_cache=self.corpus.from_cache)
        self.info["student_summary"] = self.student_summary.to_dict()
        state = self.train()
        student_dir = self.export_student(state)
        held_out = self.evaluate_held_out(state.step)
        result = {
            "steps": state.step,
            "tokens_seen": state.tokens_seen,
            "final_loss": state.last_loss,
            "finished": state.step >= self.total_steps,
            "student_dir": str(student_dir.resolve()),
            "student": self.student_summary.to_dict(),
            "held_out_mlm": held_out,
            "teacher": self.teacher_source.name,
            "wall_seconds": time.perf_counter() - t0,
        }
        self.info["student_dir"] = result["student_dir"]
        return result
