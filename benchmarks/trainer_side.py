"""The trainer side of the benchmark: kd_plugin's DeepSpeed ``DistillationTrainer``, stepped from outside.

The trainer is built exactly as ``experiments/distill.py`` builds it (``DistillConfig.from_dict`` of the
declared defaults, ``kd_plugin.config.distill_defaults()``, then this side's overrides), but without Sacred: no observer, nothing reaches a
database. Its step iterator (``DistillationTrainer.steps()``) is pulled ``n`` optimizer steps at a time; closing
it at the end of each window stops the batch-prefetch thread and rewinds the sampler to the last consumed
batch, so no work is done ahead while the other side is being timed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from benchmarks.harness import per_token_phases

PROJECT = Path(__file__).resolve().parents[1]
DS_CONFIG = {"fp32": PROJECT / "ds_configs" / "zero2.json", "bf16": PROJECT / "ds_configs" / "bf16.json"}


class TrainerSide:
    """``DistillationTrainer`` as a benchmark side, configured like the original-style loop beside it.

    Same teacher (``teacher_dir_or_name``: ``bert-tiny`` on CPU, the saved random BERT-base directory on CUDA),
    a ``distilbert_release`` student of ``n_layers``, ``wiki_leads`` through the same tokenized cache, the same
    micro-batch and accumulation on one rank, T=2 with weights 5/2/1, masking 0.15 (80/10/10, smoothing 0.7),
    AdamW lr 5e-4, betas (0.9, 0.98), eps 1e-6, no weight decay, 5 % warm-up, clipping 5.0. ``fp32`` runs
    ``ds_configs/zero2.json``, ``bf16`` runs ``ds_configs/bf16.json`` (autocast, fp32 master weights, bf16
    teacher). ``max_steps`` is never reached and no log point falls inside the benchmark, so the loop's only
    per-step work is training. ``notes`` lists the engine settings; ``close()`` frees the engine.

    ``objective="causal_lm"`` (a GPT-2 teacher directory) configures what the ``causal_lm`` named config of
    ``experiments/distill.py`` does: ``student.architecture=same`` (the teacher's class, fewer blocks),
    weights 5 / 0 / 2 / 1 (ce / mlm / clm / cos), ``data.pad_token=eos`` (used only if the tokenizer has no pad
    token of its own); no masking.
    """

    def __init__(
        self,
        teacher_dir_or_name: str,
        precision: str,
        micro_batch: int,
        max_seq_length: int,
        device: torch.device | str,
        *,
        n_layers: int | None = None,
        gradient_accumulation_steps: int = 1,
        grouping: str = "grouped",
        data_cache_dir: str | Path | None = None,
        held_out_fraction: float = 0.02,
        seed: int = 0,
        name: str = "kd_plugin trainer",
        objective: str = "masked_lm",
        torch_adam: bool = False,
        performance: dict | None = None,
    ):
        self.name = name
        self.precision = precision
        self.teacher_dir_or_name = teacher_dir_or_name
        self.micro_batch = micro_batch
        self.max_seq_length = max_seq_length
        self.device = torch.device(device)
        self.n_layers = n_layers
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.grouping = grouping
        self.data_cache_dir = data_cache_dir
        self.held_out_fraction = held_out_fraction
        self.seed = seed
        self.objective = objective
        self.torch_adam = torch_adam  # torch's AdamW instead of DeepSpeed's JIT-built FusedAdam (gpu_check's fallback)
        self.performance = dict(performance or {})  # performance.* overrides (a variant of the trainer)
        self.notes: list[str] = []
        if objective not in ("masked_lm", "causal_lm"):
            raise ValueError(f"objective must be masked_lm or causal_lm, got {objective!r}")

        if grouping != "grouped":
            raise SystemExit("the trainer always uses length-grouped batches: run the comparison with "
                             "--grouping grouped")
        self._trainer = None
        self._tmp = Path(tempfile.mkdtemp(prefix="kd-bench-trainer-"))

    def _build(self):
        from kd_plugin.config import DistillConfig, distill_defaults
        from kd_plugin.training.trainer import DistillationTrainer

        cfg = distill_defaults()
        cfg.update(seed=self.seed, teacher=self.teacher_dir_or_name, T=2.0, alpha_ce=5.0, alpha_mlm=2.0,
                   alpha_clm=0.0, alpha_cos=1.0, alpha_mse=0.0, max_steps=10**9, epochs=None, log_every=10**9,
                   checkpoint_every=None, output_dir=str(self._tmp / "run"), progress_bar=False,
                   eval_max_sequences=0, deepspeed_config=str(self._ds_config()))
        cfg["loss_weights"] = {name: 0.0 for name in cfg["loss_weights"]}
        cfg["student"] = dict(cfg["student"], layers="distilbert_release", n_layers=self.n_layers, dropout=None)
        cfg["data"] = dict(cfg["data"], corpus="wiki_leads", max_seq_length=self.max_seq_length,
                           held_out_fraction=self.held_out_fraction, max_documents=None,
                           cache_dir=str(self.data_cache_dir or PROJECT / ".cache" / "datasets"))
        if self.objective == "causal_lm":  # experiments/distill.py's causal_lm named config
            cfg.update(alpha_mlm=0.0, alpha_clm=2.0)
            cfg["student"]["architecture"] = "same"
            cfg["data"]["pad_token"] = "eos"
        cfg["performance"] = dict(cfg["performance"], **self.performance)
        cfg["batch"] = dict(micro_batch_size=self.micro_batch,
                            gradient_accumulation_steps=self.gradient_accumulation_steps, effective_batch_size=None)
        cfg["masking"] = dict(cfg["masking"], mlm_probability=0.15, mask_fraction=0.8, random_fraction=0.1,
                              keep_fraction=0.1, smoothing=0.7)
        cfg["optim"] = dict(cfg["optim"], lr=5e-4, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.0,
                            warmup_proportion=0.05, max_grad_norm=5.0)
        trainer = DistillationTrainer(DistillConfig.from_dict(cfg))
        trainer.setup()
        if trainer.device.type != self.device.type:
            raise SystemExit(f"the trainer runs on {trainer.device}, the loop on {self.device}")
        info = trainer.info["engine"]
        perf = trainer.config.performance
        self.notes += [
            f"DeepSpeed engine: ZeRO-{info['zero_stage']}, {info['optimizer']}, precision {info['precision']} "
            f"({'torch autocast, fp32 weights' if trainer.config.deepspeed.autocast else 'engine dtype'})",
            f"attention {trainer.info['attn_implementation']}; logit losses in chunks of {perf.logit_chunk_rows} "
            f"rows ({'one shared pass' if perf.fuse_logit_rows else 'a pass per term'}; LM heads "
            f"{'inside the losses' if trainer.models.module.fuse_lm_head else 'in the models'}); "
            f"{'torch.compile; ' if perf.compile else ''}{perf.prefetch_batches} batches prefetched by a thread "
            "within a window (stopped between windows); metrics reduced only at log points (none inside the "
            "benchmark)",
        ]
        return trainer

    def _ds_config(self) -> Path:
        """The precision's DeepSpeed JSON; with ``torch_adam`` a copy whose optimizer is torch's AdamW."""
        source = DS_CONFIG[self.precision]
        if not self.torch_adam:
            return source
        config = json.loads(source.read_text())
        config["optimizer"] = dict(config["optimizer"], params=dict(config["optimizer"].get("params") or {},
                                                                    torch_adam=True))
        target = self._tmp / f"torch-adam-{source.name}"
        target.write_text(json.dumps(config))
        return target

    def run_steps(self, n: int) -> int:
        """Run ``n`` optimizer steps of the trainer; return the real (non-pad) tokens of their micro-batches."""
        if self._trainer is None:
            self._trainer = self._build()
        state = self._trainer.state
        before = state.tokens_seen + state.pending_tokens
        steps = self._trainer.steps()
        try:
            for _ in range(n):
                next(steps)
        finally:
            steps.close()  # stops the prefetch thread, rewinds the sampler to the last consumed batch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return state.tokens_seen + state.pending_tokens - before

    def phase_breakdown(self, n: int) -> dict[str, dict[str, float]]:
        """The trainer's own per-phase timing over ``n`` more steps (synchronised, so slower than the timed
        windows): milliseconds per optimizer step, per 1000 real tokens, and share, per phase."""
        if self._trainer is None:
            self._trainer = self._build()
        timer = self._trainer.timer
        timer.seconds.clear()
        timer.steps, timer.enabled = 0, True
        try:
            tokens = self.run_steps(n)
        finally:
            timer.enabled = False
        return per_token_phases(timer.breakdown(), n, tokens)

    def probe_memory(self, micro_batch: int, seq_len: int) -> tuple[int, int]:
        """Peak device memory (bytes: allocated, reserved by the caching allocator) of one optimizer step on
        ``micro_batch`` full-length sequences (every position a real token: the worst case of
        ``data.max_seq_length=seq_len``). CUDA only."""
        if self._trainer is None:
            self._trainer = self._build()
        trainer, device = self._trainer, self.device
        generator = torch.Generator().manual_seed(micro_batch)
        vocab = len(trainer.models.tokenizer)
        ids = torch.randint(1000, vocab, (micro_batch, seq_len), generator=generator)  # (bs, seq_len)
        ids[:, 0], ids[:, -1] = trainer.models.tokenizer.cls_token_id, trainer.models.tokenizer.sep_token_id
        masked, labels = trainer.data.maker.targets.make(ids, torch.ones_like(ids), generator)  # (bs, seq_len)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        engine = trainer.engine.engine
        losses = engine(input_ids=masked.to(device), attention_mask=torch.ones_like(ids).to(device),
                        labels=labels.to(device), token_rows=torch.arange(ids.numel()).to(device),
                        target_rows=labels.flatten().ne(-100).nonzero().squeeze(1).to(device))
        engine.backward(losses["loss"])
        engine.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)

    def close(self) -> None:
        """Free the engine and its memory before the next pair of sides."""
        self._trainer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        shutil.rmtree(self._tmp, ignore_errors=True)
