"""Forward + backward time of the logit losses by chunk size, each term's own pass against the shared pass.

The workload is DistilGPT2's logit terms on one CPU micro-batch of the ``gpt2`` workload's shape: 16 sequences
of 100 positions (4 of them padded from 90), a 30,522-token vocabulary, ``ce`` (T = 2, weight 5) over the real
tokens and ``clm`` (weight 2) over the positions with a next token; random fp32 logits. Each configuration
(``performance.fuse_logit_rows`` false/true x ``performance.logit_chunk_rows``) is timed in alternated rounds
(every configuration once per round, the order rotating), median over rounds. This is what
``performance.logit_chunk_rows=auto`` is chosen from (``kd_plugin.losses.logit_kernels.auto_chunk_rows``).

    .venv/bin/python benchmarks/logit_chunks.py            # -> benchmarks/results/<date>-cpu-logit-chunks.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402

from benchmarks.report import device_summary, results_path  # noqa: E402
from kd_plugin.losses import DistillationOutputs, LossMixture, MixtureDeclaration, ModelDims  # noqa: E402
from kd_plugin.losses.logit_kernels import auto_chunk_rows  # noqa: E402

BS, SEQ_LEN, VOCAB = 16, 100, 30522
WEIGHTS = {"ce": 5.0, "clm": 2.0}


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(BS, SEQ_LEN, dtype=torch.long)  # (bs, seq_len)
    mask[:4, 90:] = 0
    labels = torch.full((BS, SEQ_LEN), -100)  # (bs, seq_len)
    has_next = mask.bool() & mask.roll(-1, 1).bool()  # (bs, seq_len)
    has_next[:, -1] = False
    labels[has_next] = torch.randint(0, VOCAB, (int(has_next.sum()),), generator=g)
    return dict(
        student=torch.randn(BS, SEQ_LEN, VOCAB, generator=g).requires_grad_(),  # (bs, seq_len, V)
        teacher=torch.randn(BS, SEQ_LEN, VOCAB, generator=g),  # (bs, seq_len, V)
        mask=mask, labels=labels,
        token_rows=mask.flatten().nonzero().squeeze(1), target_rows=labels.flatten().ne(-100).nonzero().squeeze(1),
    )


def step_seconds(data: dict, fuse: bool, chunk_rows: int) -> float:
    mixture = LossMixture(MixtureDeclaration(weights=WEIGHTS, temperature=2.0),
                          ModelDims(8, 8, 1, 2, objective="causal_lm"), fuse_logit_rows=fuse)
    data["student"].grad = None
    start = time.perf_counter()
    losses = mixture(DistillationOutputs(data["student"], data["teacher"], data["mask"], data["labels"],
                                         token_rows=data["token_rows"], target_rows=data["target_rows"],
                                         logit_chunk_rows=chunk_rows))
    losses["loss"].backward()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64, 128, 256, 1024])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=str(PROJECT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = batch()
    configs = [(fuse, chunk) for fuse in (False, True) for chunk in args.chunks]
    for fuse, chunk in configs:  # warm-up
        step_seconds(data, fuse, chunk)
    times: dict[tuple[bool, int], list[float]] = {c: [] for c in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for config in order:
            times[config].append(step_seconds(data, *config))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = [{"fuse_logit_rows": fuse, "logit_chunk_rows": chunk,
             "median_ms": 1e3 * statistics.median(times[(fuse, chunk)]),
             "min_ms": 1e3 * min(times[(fuse, chunk)]), "max_ms": 1e3 * max(times[(fuse, chunk)])}
            for fuse, chunk in configs]
    reference = next(r["median_ms"] for r in rows if not r["fuse_logit_rows"] and r["logit_chunk_rows"] == 1024)
    for row in rows:
        row["speed_vs_term_passes_1024"] = reference / row["median_ms"]
    result = {"device": device_summary(torch.device("cpu")), "command": ["logit_chunks.py", *(argv or sys.argv[1:])],
              "workload": {"batch": BS, "seq_len": SEQ_LEN, "vocab": VOCAB, "weights": WEIGHTS, "T": 2.0,
                           "real_tokens": int(data["token_rows"].numel()),
                           "next_token_targets": int(data["target_rows"].numel())},
              "auto_chunk_rows": auto_chunk_rows(VOCAB, "cpu"), "rounds": args.rounds, "rows": rows}
    path = results_path(args.out, torch.device("cpu"), workload="logit-chunks")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print("| pass | rows per chunk | median ms (min-max) | vs per-term passes, 1024 rows |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {'shared' if row['fuse_logit_rows'] else 'per term'} | {row['logit_chunk_rows']} | "
              f"{row['median_ms']:.0f} ({row['min_ms']:.0f}-{row['max_ms']:.0f}) | "
              f"{row['speed_vs_term_passes_1024']:.2f}x |")
    print(f"\nresults: {path}")
    return result


if __name__ == "__main__":
    main()
