"""Training throughput of kd_plugin's DeepSpeed distillation trainer vs the original DistilBERT-style loop.

Both sides distil the same teacher into the same student on the same tokenized corpus with the same
micro-batch size, one after the other in this process, and the ratio is printed:

- **baseline**, written here the way Hugging Face's ``distiller.py`` does it: fp32, ``torch.optim.AdamW``,
  random (not length-grouped) batches padded to their longest sequence, full-vocabulary logits on every
  position, losses on ``masked_select`` rows;
- **kd_plugin**: ``DistillationTrainer`` (the code ``experiments/distill.py`` runs) with a DeepSpeed config
  given by ``--ds-config`` (default: bf16, ZeRO-2, DeepSpeed FusedAdam), length-grouped batches.

Tokens/s counts real (non-pad) tokens. Model FLOP/s uses the usual estimate: forward ~ 2 x (weights touched per
token) + attention, backward ~ 2 x forward, for the student; forward only for the teacher. It is compared with
the dense matmul peak measured here in fp32 and bf16.

    .venv/bin/python benchmarks/distill_throughput.py [--steps 40] [--teacher bert-tiny] [--micro-batch 16]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kd_plugin.data import build_tokenized_corpus, collate_batch, load_corpus  # noqa: E402
from kd_plugin.masking import DynamicMasker, MaskingConfig  # noqa: E402
from kd_plugin.student import build_student  # noqa: E402
from kd_plugin.teacher_catalogue import load_teacher, resolve_teacher  # noqa: E402
from kd_plugin.training.launch_env import ensure_launch_env  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def flops_per_token(model_config, seq_len: float, layers: int, vocab_head: bool = True) -> float:
    """Forward FLOPs per token of a BERT-like encoder with an MLM head (weights and attention scores)."""
    d = getattr(model_config, "hidden_size", None) or model_config.dim
    ff = getattr(model_config, "intermediate_size", None) or model_config.hidden_dim
    per_layer = 2 * (4 * d * d + 2 * d * ff) + 2 * 2 * seq_len * d  # projections + QK^T and AV
    head = 2 * (d * d + d * model_config.vocab_size) if vocab_head else 0
    return layers * per_layer + head


def baseline(args, teacher, student, tokenizer, corpus, masker) -> dict:
    """The original loop: fp32, torch AdamW, random batches, logits on every position."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(corpus.train))
    T = 2.0
    tokens, elapsed = 0, 0.0
    student.train()
    for step in range(args.warmup + args.steps):
        idx = order[step * args.micro_batch:(step + 1) * args.micro_batch].tolist()
        batch = collate_batch([{"input_ids": x} for x in corpus.train[idx]["input_ids"]], tokenizer.pad_token_id)
        ids, labels = masker.mask(batch["input_ids"], batch["attention_mask"], torch.Generator().manual_seed(step))
        attn = batch["attention_mask"]
        t0 = time.perf_counter()
        s_out = student(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        with torch.no_grad():
            t_out = teacher(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        s_logits, t_logits = s_out.logits, t_out.logits  # (bs, seq_len, voc_size)
        mask = attn.unsqueeze(-1).expand_as(s_logits).bool()  # (bs, seq_len, voc_size)
        s_slct = torch.masked_select(s_logits, mask).view(-1, s_logits.size(-1))  # (n_tokens, voc_size)
        t_slct = torch.masked_select(t_logits, mask).view(-1, s_logits.size(-1))  # (n_tokens, voc_size)
        loss_ce = F.kl_div(F.log_softmax(s_slct / T, -1), F.softmax(t_slct / T, -1), reduction="batchmean") * T**2
        loss_mlm = F.cross_entropy(s_logits.view(-1, s_logits.size(-1)), labels.view(-1), ignore_index=-100)
        hmask = attn.unsqueeze(-1).expand_as(s_out.hidden_states[-1]).bool()  # (bs, seq_len, dim)
        s_h = torch.masked_select(s_out.hidden_states[-1], hmask).view(-1, s_out.hidden_states[-1].size(-1))
        t_h = torch.masked_select(t_out.hidden_states[-1], hmask).view(-1, s_out.hidden_states[-1].size(-1))
        loss_cos = F.cosine_embedding_loss(s_h, t_h, torch.ones(s_h.size(0)))
        loss = 5.0 * loss_ce + 2.0 * loss_mlm + 1.0 * loss_cos
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad()
        if step >= args.warmup:
            elapsed += time.perf_counter() - t0
            tokens += int(attn.sum())
    return {"tokens_per_second": tokens / elapsed, "tokens": tokens, "seconds": elapsed,
            "mean_len": tokens / (args.steps * args.micro_batch)}


def kd_plugin_trainer(args, out_dir: Path) -> dict:
    """Run the real trainer (as experiments/distill.py does) and read its logged throughput."""
    from kd_plugin.training.trainer import DistillationTrainer

    sys.argv = [sys.argv[0]]
    import importlib.util

    spec = importlib.util.spec_from_file_location("distill_experiment", PROJECT / "experiments" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    holder = {}

    @module.ex.main
    def capture(_config):
        holder["cfg"] = dict(_config)

    module.ex.run(config_updates={
        "teacher": args.teacher, "batch": {"micro_batch_size": args.micro_batch},
        "max_steps": args.warmup + args.steps, "log_every": 1, "checkpoint_every": None,
        "output_dir": str(out_dir), "progress_bar": False, "deepspeed_config": str(PROJECT / args.ds_config),
        "data": {"max_seq_length": args.max_seq_length},
    })
    trainer = DistillationTrainer(holder["cfg"])
    trainer.run()
    records = [json.loads(line) for line in open(out_dir / "metrics.jsonl")][args.warmup:]
    # Each record's tokens_per_second covers exactly one optimizer step (log_every=1): time-weighted mean.
    seconds = sum(1.0 / r["tokens_per_second"] for r in records)
    return {"tokens_per_second": len(records) / seconds, "engine": trainer.info["engine"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="bert-tiny")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--ds-config", default="ds_configs/bf16.json")
    args = parser.parse_args()
    ensure_launch_env()
    torch.set_num_threads(os.cpu_count() or 1)

    source = resolve_teacher(args.teacher)
    teacher, tokenizer = load_teacher(source)
    student, summary = build_student(teacher, "alternate")
    corpus = build_tokenized_corpus(load_corpus("wiki_leads"), tokenizer, args.max_seq_length,
                                    PROJECT / ".cache" / "datasets", 0.02)
    masker = DynamicMasker(MaskingConfig(), len(tokenizer), tokenizer.mask_token_id, tokenizer.pad_token_id,
                           tokenizer.all_special_ids, corpus.token_counts)

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    base = baseline(args, teacher, student, tokenizer, corpus, masker)
    with tempfile.TemporaryDirectory() as tmp:
        ours = kd_plugin_trainer(args, Path(tmp) / "run")

    seq = base["mean_len"]
    f_student = flops_per_token(student.config, seq, student.config.n_layers)
    f_teacher = flops_per_token(teacher.config, seq, teacher.config.num_hidden_layers)
    train_flops_per_token = 3 * f_student + f_teacher
    ratio = ours["tokens_per_second"] / base["tokens_per_second"]
    print(f"\nteacher {args.teacher} ({summary.teacher_n_parameters / 1e6:.1f} M params) -> student "
          f"{summary.n_layers} layers ({summary.n_parameters / 1e6:.1f} M); micro-batch {args.micro_batch}, "
          f"max_seq_length {args.max_seq_length}, {args.steps} timed steps after {args.warmup} warm-up steps")
    print(f"dense matmul peak (2048^2, {torch.get_num_threads()} threads): fp32 {peak32 / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak16 / 1e9:.1f} GFLOP/s")
    print(f"{'':34s}{'tokens/s':>10s}{'GFLOP/s':>10s}{'of peak':>10s}")
    for name, tps, peak in [("baseline (fp32, AdamW, random)", base["tokens_per_second"], peak32),
                            (f"kd_plugin ({ours['engine']['precision']}, {ours['engine']['optimizer']})",
                             ours["tokens_per_second"], peak16 if ours["engine"]["precision"] == "bf16" else peak32)]:
        gflops = tps * train_flops_per_token / 1e9
        print(f"{name:34s}{tps:10.0f}{gflops:10.2f}{gflops * 1e9 / peak:10.1%}")
    print(f"speed-up kd_plugin / baseline: {ratio:.2f}x (target >= 1.5x)")
    if not math.isfinite(ratio):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
