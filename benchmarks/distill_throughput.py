"""Training throughput of kd_plugin's distillation trainer against the original DistilBERT loop, like for like.

For each precision (fp32, bf16) two sides train the same teacher into the same student on the same tokenized
corpus with the same micro-batch, recipe and batch grouping, and are timed in alternating windows
(``benchmarks/harness.py``):

- **baseline**: ``OriginalStyleLoop`` (``benchmarks/original_loop.py``), the step of Hugging Face's
  ``distiller.py`` in that precision, its batch drawing, padding and masking inside the timed windows;
- **kd_plugin trainer**: ``TrainerSide`` (``benchmarks/trainer_side.py``), the DeepSpeed trainer in the same
  precision, stepped through ``DistillationTrainer.steps()`` (the loop ``experiments/distill.py`` runs);
- **variants** (``--trainer-variant [PRECISION:]performance.KEY=VALUE``, repeatable): the same trainer with one
  performance setting changed, timed in the same alternation (in every precision, or in the one named), so what a setting buys is measured like for like (e.g.
  ``performance.fuse_lm_head=false``: the models' own LM heads; ``performance.compile=true``: torch.compile).

Workloads (``--workload``, ``benchmarks/workload.py``):

- ``bert`` (default, masked LM): on CUDA a BERT-base-size teacher (random weights, bert-base-uncased
  vocabulary) -> 6-layer student, micro-batch 128; on CPU the packaged 2-layer bert-tiny -> 1-layer student,
  micro-batch 16;
- ``gpt2`` (causal LM, DistilGPT2's recipe: L_ce + L_clm + L_cos, 5 / 2 / 1): a random GPT-2 teacher on the
  same vocabulary -> a GPT-2 student with half its blocks (``student.architecture=same``); on CUDA GPT-2-small
  size (12 x 768) -> 6 blocks, on CPU 4 x 128 -> 2 blocks; same micro-batches. The baseline runs the
  original's GPT-2 step (``OriginalStyleLoop(objective="causal_lm")``).

Max length 128. Reported per side: median tokens/s (real, non-pad tokens), the ratio to the baseline of the
same precision, model FLOP/s and its share of the dense matmul peak measured in the same run in that
precision, GPU busy share and peak memory (CUDA), and the machine's load average before and after each
precision's windows. Results: ``<out>/<date>-<device>.json`` (``<date>-<device>-gpt2.json`` for ``gpt2``)
and a markdown table on stdout. Nothing is written to any database (no Sacred, no observer).

    python benchmarks/distill_throughput.py --no-trainer                 # the baseline alone
    python benchmarks/distill_throughput.py                              # trainer vs baseline
    python benchmarks/distill_throughput.py --workload gpt2              # the same for a GPT-2 (causal LM)
    python benchmarks/distill_throughput.py --precision bf16 --windows 10 --steps-per-window 5
    python benchmarks/distill_throughput.py --trainer-variant performance.fuse_lm_head=false \
        --trainer-variant performance.compile=true       # what each setting buys, same windows
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    EncoderShape,
    alternate,
    attention_length,
    device_summary,
    distillation_flops_per_token,
    markdown_table,
    matmul_peak,
    observe_window,
    paired_ratio,
    process_peak_rss,
    results_path,
    write_results,
)
from benchmarks.original_batches import GROUPINGS  # noqa: E402
from benchmarks.original_loop import OriginalStyleLoop  # noqa: E402
from benchmarks.trainer_side import TrainerSide  # noqa: E402
from benchmarks.workload import HELD_OUT_FRACTION, WORKLOADS, build_workload  # noqa: E402

PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# per device: micro-batch, windows, steps per window, warm-up steps
DEFAULTS = {"cuda": (128, 8, 5, 3), "cpu": (16, 6, 3, 2)}
TRAINER = "kd_plugin trainer"  # the trainer side's name (variants add their setting in parentheses)
# Failures rehearsed on purpose (gpu_check.sh's KD_GPU_CHECK_INJECT passes them on), so that a CPU dry run proves
# a GPU run keeps its numbers: late_crash = the run dies after its first precision's results are written;
# probe_oom = the memory probe's step runs out of memory (at its second size on CUDA, its first on CPU).


def injected(name: str) -> bool:
    return name in os.environ.get("KD_BENCH_INJECT", "").split(",")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=WORKLOADS, default="bert",
                        help="bert: masked-LM distillation (default); gpt2: causal-LM distillation of a GPT-2")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default=None,
                        help="default: both on CUDA, fp32 on CPU")
    parser.add_argument("--windows", type=int, default=None, help="timed windows per side (default 8 CUDA, 6 CPU)")
    parser.add_argument("--steps-per-window", type=int, default=None, help="optimizer steps per window (5 / 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed optimizer steps per side first (3 / 2)")
    parser.add_argument("--micro-batch", type=int, default=None, help="sequences per micro-batch (128 / 16)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--grouping", choices=GROUPINGS, default="grouped",
                        help="length-grouped batches (group_by_size, the default) or random batches")
    parser.add_argument("--out", default=str(PROJECT / "benchmarks" / "results"), help="results folder")
    parser.add_argument("--cache-dir", default=str(PROJECT / ".cache"),
                        help="tokenized corpus and the saved random teachers (BERT-base, GPT-2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-trainer", action="store_true", help="the original-style loop alone")
    parser.add_argument("--torch-adam", action="store_true",
                        help="the trainer with torch's AdamW instead of DeepSpeed's JIT-built FusedAdam (when the "
                        "image cannot build it; the notes say which optimizer ran)")
    parser.add_argument("--trainer-variant", action="append", default=[], type=trainer_variant,
                        metavar="[PRECISION:]performance.KEY=VALUE",
                        help="another trainer side with one performance setting changed (repeatable), timed in the "
                        "same alternation, in every precision or only the one named: e.g. "
                        "performance.fuse_lm_head=false, bf16:performance.compile=true")
    parser.add_argument("--baseline-twice", action="store_true", help=argparse.SUPPRESS)  # harness self-test
    parser.add_argument("--memory-probe", action="store_true",
                        help="CUDA: the largest micro-batch of full-length sequences one optimizer step fits, with its "
                        "peak memory, and the accumulation the paper's 4096-sequence batch then needs")
    parser.add_argument("--memory-probe-length", type=int, default=512)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    micro_batch, windows, steps, warmup = DEFAULTS[device.type]
    args.device = device
    args.micro_batch = args.micro_batch or micro_batch
    args.windows = args.windows or windows
    args.steps_per_window = args.steps_per_window or steps
    args.warmup = warmup if args.warmup is None else args.warmup
    args.precision = args.precision or ("both" if device.type == "cuda" else "fp32")
    args.precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    return args


def trainer_variant(text: str) -> tuple[str | None, str, object]:
    """``[PRECISION:]performance.KEY=VALUE`` -> (precision or None for every precision, KEY, VALUE read as JSON,
    else as a string); KEY must be a declared performance setting."""
    from kd_plugin.config import distill_defaults

    declared = distill_defaults()["performance"]
    precision, _, assignment = text.rpartition(":")
    key, sep, raw = assignment.partition("=")
    name = key.removeprefix("performance.")
    if not sep or name == key or name not in declared or precision not in ("", *PEAK_DTYPES):
        raise argparse.ArgumentTypeError(f"{text!r}: expected [fp32:|bf16:]performance.KEY=VALUE with KEY one of "
                                         f"{', '.join(declared)}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return precision or None, name, value


def make_sides(args, workload, precision: str) -> tuple[list, str]:
    """The sides of one precision, and the name of the baseline among them."""

    def loop(name: str) -> OriginalStyleLoop:
        return OriginalStyleLoop(
            workload.teacher, workload.student, workload.tokenizer, workload.corpus, args.micro_batch,
            precision=precision, grouping=args.grouping, gradient_accumulation_steps=args.gradient_accumulation_steps,
            seed=args.seed, name=name, objective=workload.objective,
        )

    if args.baseline_twice:
        return [loop("original-style loop A"), loop("original-style loop B")], "original-style loop A"
    if args.no_trainer:
        return [loop("original-style loop")], "original-style loop"
    def trainer(name: str, performance: dict) -> TrainerSide:
        return TrainerSide(
            workload.teacher_ref, precision, args.micro_batch, args.max_seq_length, args.device,
            n_layers=workload.description["student_layers"],
            gradient_accumulation_steps=args.gradient_accumulation_steps, grouping=args.grouping,
            data_cache_dir=Path(args.cache_dir) / "datasets", held_out_fraction=HELD_OUT_FRACTION, seed=args.seed,
            objective=workload.objective, torch_adam=args.torch_adam, name=name, performance=performance,
        )

    variants = [trainer(f"{TRAINER} ({key}={json.dumps(value)})", {key: value})
                for only, key, value in args.trainer_variant if only in (None, precision)]
    return [trainer(TRAINER, {}), *variants, loop("original-style loop")], "original-style loop"


def release(sides: list) -> None:
    for side in sides:
        if hasattr(side, "close"):
            side.close()
    sides.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (this benchmark's own threads count in them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


PROBE_CAP_BYTES = 80 * 10**9  # the goal's card: an 80 GB GPU, whatever card the probe runs on


def probe_micro_batches(trainer, seq_len: int, sizes=(8, 16, 32, 64, 128, 256, 512),
                        device_memory: int | None = None, cap: int = PROBE_CAP_BYTES,
                        inject_oom_at: int | None = None) -> dict:
    """Grow the micro-batch of ``seq_len``-token sequences until an optimizer step no longer fits in ``cap``
    bytes (the process is limited to that share of the card while probing; ``device_memory`` None: the CUDA
    card's). An out-of-memory error ends the probe with what fitted; any other error is recorded, not raised.
    ``inject_oom_at``: that size raises an out-of-memory error instead of running (a rehearsal)."""
    if device_memory is None:
        device_memory = torch.cuda.get_device_properties(trainer.device).total_memory
    limit = min(cap, device_memory)
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(limit / device_memory, trainer.device)
    fits, stopped_by = [], "every size fitted"
    try:
        for size in sizes:
            try:
                if size == inject_oom_at:
                    raise torch.cuda.OutOfMemoryError(f"injected (KD_BENCH_INJECT=probe_oom) at micro-batch {size}")
                allocated, reserved = trainer.probe_memory(size, seq_len)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                stopped_by = f"out of memory at micro-batch {size}"
                print(f"  memory probe: micro-batch {size} x {seq_len}: out of memory", flush=True)
                break
            except Exception as err:  # noqa: BLE001  (the probe must not lose the timings already measured)
                stopped_by = f"{type(err).__name__} at micro-batch {size}: {err}"
                print(f"  memory probe: micro-batch {size} x {seq_len}: {stopped_by}", flush=True)
                break
            fits.append({"micro_batch": size, "peak_allocated_bytes": allocated, "peak_reserved_bytes": reserved})
            print(f"  memory probe: micro-batch {size} x {seq_len}: peak {allocated / 2**30:.1f} GiB allocated, "
                  f"{reserved / 2**30:.1f} GiB reserved", flush=True)
    finally:
        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(1.0, trainer.device)
    largest = fits[-1] if fits else None
    return {"seq_len": seq_len, "device_memory_bytes": device_memory, "cap_bytes": limit, "fits": fits,
            "stopped_by": stopped_by, "largest_micro_batch": largest["micro_batch"] if largest else None,
            "accumulation_for_4096": -(-4096 // largest["micro_batch"]) if largest else None}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = args.device
    started = time.perf_counter()
    load_started = load_average()
    summary = device_summary(device)
    print(f"device: {summary.get('gpu') or summary['cpu']} ({device.type}), torch {summary['torch']}, "
          f"{summary['torch_threads']} threads", flush=True)

    peaks = {name: matmul_peak(PEAK_DTYPES[name], device) for name in args.precisions}
    print("dense matmul peak: " + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" for k, v in peaks.items()), flush=True)

    workload = build_workload(device, args.max_seq_length, Path(args.cache_dir), args.seed, args.workload)
    seq_len = attention_length(workload.corpus.lengths("train"))
    flops = distillation_flops_per_token(
        EncoderShape.of(workload.student.config), EncoderShape.of(workload.teacher.config), seq_len
    )
    print(f"workload: {workload.description}", flush=True)

    path = results_path(args.out, device, workload=None if args.workload == "bert" else args.workload)
    comparisons, notes = [], []

    def results(complete: bool) -> dict:
        """The results file's content; written after each precision (``complete`` false until the end), so a
        later crash or time limit keeps what was measured."""
        return {
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "complete": complete,
            "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
            "device": summary,
            "matmul_peak_flops_per_s": peaks,
            "workload": dict(
                workload.description, micro_batch=args.micro_batch, grouping=args.grouping,
                gradient_accumulation_steps=args.gradient_accumulation_steps, attention_length=seq_len,
                flops_per_token=flops,
            ),
            "settings": {"windows": args.windows, "steps_per_window": args.steps_per_window,
                         "warmup_steps": args.warmup, "seed": args.seed},
            "comparisons": comparisons,
            "cross_precision": cross_precision_ratios(comparisons),
            "process_peak_rss_bytes": process_peak_rss() if device.type != "cuda" else None,
            "load_average_at_start": load_started,
            "wall_seconds": time.perf_counter() - started,
            "notes": notes,
        }

    for precision in args.precisions:
        print(f"\n== {precision}: {args.warmup} warm-up steps, {args.windows} windows x {args.steps_per_window} "
              f"steps per side", flush=True)
        sides, baseline = make_sides(args, workload, precision)
        load_before = load_average()
        timings = alternate(sides, args.windows, args.steps_per_window, args.warmup, device)
        load_after = load_average()
        print(f"  load average (1, 5, 15 min) before the warm-up: {load_before}, after the windows: {load_after}",
              flush=True)
        observations = {side.name: observe_window(side, args.steps_per_window, device) for side in sides}
        phases = {side.name: side.phase_breakdown(args.steps_per_window) for side in sides
                  if hasattr(side, "phase_breakdown")}
        base_timing = next(t for t in timings if t.side == baseline)
        base = base_timing.median_tokens_per_s
        comparison = {"precision": precision, "baseline": baseline, "sides": [],
                      "load_average": {"before_warmup": load_before, "after_windows": load_after}}
        for side, timing in zip(sides, timings, strict=True):
            row = timing.to_dict()
            observed = observations[side.name]
            model_flops = row["median_tokens_per_s"] * flops["step"]
            row.update(
                ratio_vs_baseline=row["median_tokens_per_s"] / base,
                paired_ratio_vs_baseline=paired_ratio(timing, base_timing),
                model_flops_per_s=model_flops,
                share_of_peak=model_flops / peaks[precision],
                gpu_busy_share=observed.gpu_busy_share if observed else None,
                peak_memory_bytes=observed.peak_memory_bytes if observed else None,
                step_memory_bytes=observed.step_memory_bytes if observed else None,
                observed_window=observed.to_dict() if observed else None,
                last_losses=getattr(side, "last_losses", None),
                notes=getattr(side, "notes", None),
                phase_breakdown=phases.get(side.name),
            )
            comparison["sides"].append(row)
        comparisons.append(comparison)
        write_results(path, results(complete=False))  # this precision's numbers are safe from here on
        print("\n" + markdown_table(comparison["sides"]), flush=True)  # in the log too, whatever happens next
        if injected("late_crash"):
            raise RuntimeError(f"injected (KD_BENCH_INJECT=late_crash): the run died after its {precision} results "
                               f"were written to {path}")
        for name, breakdown in phases.items():
            print(f"\nper-phase time of {name} [{precision}] (synchronised, {args.steps_per_window} steps):")
            for phase, figures in sorted(breakdown.items(), key=lambda kv: -kv[1]["ms_per_step"]):
                print(f"  {phase:<16} {figures['ms_per_step']:9.1f} ms/step  {figures['ms_per_1k_tokens']:8.1f} ms "
                      f"per 1k tokens  {figures['share']:6.1%}")
        if args.memory_probe and precision == args.precisions[-1]:
            trainer = next((side for side in sides if hasattr(side, "probe_memory")), None)
            if trainer is None:
                notes.append("memory probe skipped: no trainer side (--no-trainer)")
            elif device.type != "cuda" and not injected("probe_oom"):
                notes.append("memory probe skipped: it measures CUDA memory")
            else:
                comparison["memory_probe"] = probe_micro_batches(
                    trainer, args.memory_probe_length, device_memory=None if device.type == "cuda" else PROBE_CAP_BYTES,
                    inject_oom_at=(16 if device.type == "cuda" else 8) if injected("probe_oom") else None)
                write_results(path, results(complete=False))
        release(sides)

    notes += [
        "tokens/s counts real (non-pad) tokens; median over alternated windows; ratio = side median / baseline "
        "median of the same precision; paired = median over rounds of side / baseline within the round",
        "model FLOP/s = tokens/s x (3 x student forward + teacher forward) FLOPs per token; share of the dense "
        "matmul peak measured in this run in the same precision",
        f"load average (1, 5, 15 min; includes this benchmark's own {summary['torch_threads']} threads) at the "
        f"start: {load_started}; per precision before the warm-up and after the windows: see comparisons",
    ]
    final = results(complete=True)
    if device.type != "cuda":
        notes.append(f"CPU: no per-side memory; the process's peak RSS (all sides, corpus, models) was "
                     f"{final['process_peak_rss_bytes'] / 2**30:.2f} GiB")
    if args.baseline_twice:
        notes.append("harness self-test: two independent original-style loops with identical settings; "
                     "the ratio should be close to 1")
    write_results(path, final)
    print()
    for name, ratio in final["cross_precision"].items():
        print(f"- {name}: {ratio:.2f}x")
    for note in notes:
        print(f"- {note}")
    print(f"\nresults: {path}", flush=True)
    return final


def cross_precision_ratios(comparisons: list[dict]) -> dict[str, float]:
    """The goals' ratios across precisions, where both were measured: the bf16 trainer against the fp32
    original-style loop, and the bf16 trainer against the fp32 trainer (median tokens/s); and each trainer
    variant against the trainer in its precision."""
    median = {(c["precision"], side["side"]): side["median_tokens_per_s"] for c in comparisons for side in c["sides"]}
    trainer, loop = TRAINER, "original-style loop"
    ratios = {f"{side} / {trainer} [{precision}]": value / median[(precision, trainer)]
              for (precision, side), value in median.items()
              if side.startswith(f"{trainer} (") and (precision, trainer) in median}
    if ("bf16", trainer) in median and ("fp32", loop) in median:
        ratios["bf16 trainer / fp32 original-style loop"] = median[("bf16", trainer)] / median[("fp32", loop)]
    if ("bf16", trainer) in median and ("fp32", trainer) in median:
        ratios["bf16 trainer / fp32 trainer"] = median[("bf16", trainer)] / median[("fp32", trainer)]
    return ratios


if __name__ == "__main__":
    main()
