"""What showing progress costs: the held-out evaluation that ends every distillation, and a cold tokenization.

1. **Held-out evaluation**: :func:`kd_plugin.evaluation.held_out.held_out_accuracy` of the CPU workload's teacher
   and student (bert-tiny -> 1 layer, ``benchmarks/workload.py``) on the declared default number of held-out
   sequences (``eval_max_sequences``), once per progress mode: nothing (``None``: other ranks), one plain line
   per tenth (``False``: ``progress_bar=False``, log files) and a tqdm bar (``True``: the default).
2. **Tokenizing**: :func:`kd_plugin.data.build_tokenized_corpus` of ``wiki_leads`` into a fresh cache folder,
   with datasets' progress bars enabled (rank 0 with ``progress_bar=True``) and disabled (other ranks, log files).

Each measurement alternates its modes in rounds (each mode once per round, the order rotating); the figure is the
median over rounds and each mode's ratio to the mode without progress, of medians and paired (the median over
rounds of the ratio within a round). The held-out scores must be identical in every mode, the tokenized
sequences too. Progress output is swallowed.

    .venv/bin/python benchmarks/progress_overhead.py     # -> benchmarks/results/<date>-cpu-progress.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import datasets  # noqa: E402
import torch  # noqa: E402

from benchmarks.report import device_summary, results_path  # noqa: E402
from benchmarks.workload import HELD_OUT_FRACTION, build_workload  # noqa: E402
from kd_plugin.config import distill_defaults  # noqa: E402
from kd_plugin.data import build_tokenized_corpus, load_corpus  # noqa: E402
from kd_plugin.evaluation.held_out import held_out_accuracy  # noqa: E402

EVAL_MODES = {"none": None, "plain_lines": False, "bar": True}
TOKENIZE_MODES = {"none": False, "bar": True}  # datasets' bars disabled / enabled
EVAL_MAX_SEQUENCES = distill_defaults()["eval_max_sequences"]
MAX_SEQ_LENGTH = 128


def timed(run: Callable[[], object]) -> tuple[float, object]:
    """Seconds and result of ``run()``, its stdout and stderr swallowed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        result = run()
        return time.perf_counter() - start, result


def alternated(modes: dict[str, Callable[[], object]], rounds: int, what: str) -> tuple[list[dict], dict]:
    """Rows of median seconds and ratios to the first mode; and each mode's result (of the warm-up run)."""
    names = list(modes)
    results = {name: timed(modes[name])[1] for name in names}  # warm-up, and what each mode computes
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(timed(modes[name])[0])
        print(f"{what} round {r + 1}/{rounds}: " + ", ".join(f"{n} {seconds[n][-1]:.3f} s" for n in names),
              flush=True)
    base = names[0]
    rows = [{"progress": name, "median_s": statistics.median(seconds[name]), "min_s": min(seconds[name]),
             "max_s": max(seconds[name]), "seconds": seconds[name],
             "time_vs_none": statistics.median(seconds[name]) / statistics.median(seconds[base]),
             "paired_time_vs_none": statistics.median(a / b for a, b in zip(seconds[name], seconds[base],
                                                                            strict=True))}
            for name in names]
    return rows, results


def tokenize(enabled: bool, corpus, tokenizer) -> list[list[int]]:
    """A cold tokenization into a fresh cache folder, datasets' bars on or off; its first 100 train sequences."""
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    with tempfile.TemporaryDirectory() as cache:
        tokenized = build_tokenized_corpus(corpus, tokenizer, MAX_SEQ_LENGTH, cache, HELD_OUT_FRACTION)
        return tokenized.train[:100]["input_ids"]


def table(rows: list[dict]) -> str:
    lines = ["| progress | median s (min-max) | time vs none (paired) |", "|---|---:|---:|"]
    lines += [f"| {r['progress']} | {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}) | "
              f"{r['time_vs_none']:.3f}x ({r['paired_time_vs_none']:.3f}x) |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-rounds", type=int, default=21)
    parser.add_argument("--tokenize-rounds", type=int, default=15)
    parser.add_argument("--out", default=str(PROJECT / "benchmarks" / "results"))
    parser.add_argument("--cache-dir", default=str(PROJECT / ".cache"),
                        help="the workload's tokenized corpus (the folder distill_throughput.py uses)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    workload = build_workload(torch.device("cpu"), MAX_SEQ_LENGTH, Path(args.cache_dir))
    models = {"teacher": workload.teacher, "student": workload.student}
    eval_rows, scores = alternated(
        {name: (lambda progress=progress: held_out_accuracy(models, workload.corpus.held_out, workload.tokenizer,
                                                            EVAL_MAX_SEQUENCES, seed=0, step=0, progress=progress))
         for name, progress in EVAL_MODES.items()}, args.eval_rounds, "held-out evaluation")
    corpus = load_corpus("wiki_leads")
    tokenize_rows, sequences = alternated(
        {name: (lambda enabled=enabled: tokenize(enabled, corpus, workload.tokenizer))
         for name, enabled in TOKENIZE_MODES.items()}, args.tokenize_rounds, "tokenizing")
    datasets.disable_progress_bars()
    if any(s != scores["none"] for s in scores.values()) or any(s != sequences["none"] for s in sequences.values()):
        raise SystemExit("the progress mode changed what was computed")
    result = {"device": device_summary(torch.device("cpu")),
              "command": ["progress_overhead.py", *(argv if argv is not None else sys.argv[1:])],
              "workload": {**workload.description, "eval_max_sequences": EVAL_MAX_SEQUENCES,
                           "held_out_sequences": min(EVAL_MAX_SEQUENCES, len(workload.corpus.held_out)),
                           "tokenized_documents": len(corpus)},
              "held_out_scores": scores["none"],
              "held_out_evaluation": {"rounds": args.eval_rounds, "rows": eval_rows},
              "tokenizing": {"rounds": args.tokenize_rounds, "rows": tokenize_rows}}
    path = results_path(args.out, torch.device("cpu"), workload="progress")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"held-out evaluation (teacher and student, {result['workload']['held_out_sequences']} sequences):\n"
          f"{table(eval_rows)}\n\ncold tokenization ({len(corpus)} documents):\n{table(tokenize_rows)}")
    print(f"\nresults: {path}")
    return result


if __name__ == "__main__":
    main()
