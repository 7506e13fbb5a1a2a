"""Device-agnostic measurement of training sides: alternated timing windows, GPU busy share, peak memory.

A *side* is anything that trains: ``run_steps(n)`` runs ``n`` optimizer steps, returns the real (non-pad) tokens
it processed and synchronises the device before returning. What is measured:

- **tokens/s**, by :func:`alternate`: every side is warmed up first (``warmup_steps`` steps each: kernel
  selection, allocator growth, lazy optimizer state, JIT builds), then windows run in turn A B A B ...: each
  window is ``steps_per_window`` steps of one side, timed with ``time.perf_counter()`` from a device
  synchronisation to the side's own synchronisation at the end of ``run_steps``. Everything a side does per
  step (its data preparation included) is inside its windows. Alternation spreads slow drifts of the machine
  (other jobs, clocks, thermals) over all sides alike; the **median** window of a side is its figure, and the
  ratio of medians compares two sides. min/max windows show the spread. On a machine whose load swings within
  a run, the **paired ratio** (:func:`paired_ratio`: the median over rounds of side / baseline within the same
  round, i.e. of windows adjacent in time) is the steadier comparison; both are reported.
- **GPU busy share** (CUDA only), by :func:`observe_window`: one extra window per side under ``torch.profiler``
  with CUDA activity; the union of the GPU kernels' time intervals (overlapping kernels on several streams
  merged, copies and memsets left out) divided by the window's wall time. The profiler's own overhead makes the
  share a slight underestimate. ``None`` on CPU.
- **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` over that extra window (statistics reset before
  it; the side's optimizer state and cached tensors already exist then, so it is the steady-state peak of a
  step). It is process-wide: the other sides' resident weights and optimizer states count too, so
  ``step_memory_bytes`` = peak - memory allocated just before the window (the side's activations, logits and
  other transients of a step) is the part that compares sides. On CPU there is no per-side figure:
  :func:`process_peak_rss` is the peak RSS of the whole process (every side, the corpus, the models), once.

The FLOP estimate and the matmul peak live in :mod:`benchmarks.model_flops`, the device description and the
results file in :mod:`benchmarks.report`; they are re-exported here.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from benchmarks.model_flops import (
    EncoderShape,
    attention_length,
    distillation_flops_per_token,
    matmul_peak,
    synchronize,
)
from benchmarks.report import device_summary, markdown_table, results_path, write_results

__all__ = [
    "EncoderShape",
    "Side",
    "SideTiming",
    "WindowObservation",
    "alternate",
    "attention_length",
    "busy_share",
    "device_summary",
    "distillation_flops_per_token",
    "markdown_table",
    "matmul_peak",
    "merge_intervals",
    "observe_window",
    "paired_ratio",
    "per_token_phases",
    "process_peak_rss",
    "results_path",
    "write_results",
]


@runtime_checkable
class Side(Protocol):
    """One way of training, measured as a black box."""

    name: str
    precision: str  # "fp32" | "bf16"

    def run_steps(self, n: int) -> int:
        """Run ``n`` optimizer steps; return the real (non-pad) tokens processed; synchronise the device."""
        ...


@dataclass
class SideTiming:
    """The timed windows of one side."""

    side: str
    precision: str
    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def windows(self) -> list[float]:
        """tokens/s of each window, in run order."""
        return [t / s for t, s in zip(self.tokens, self.seconds, strict=True)]

    @property
    def median_tokens_per_s(self) -> float:
        return statistics.median(self.windows)

    def to_dict(self) -> dict:
        windows = self.windows
        return {
            "side": self.side,
            "precision": self.precision,
            "median_tokens_per_s": self.median_tokens_per_s,
            "min_tokens_per_s": min(windows),
            "max_tokens_per_s": max(windows),
            "windows": windows,
            "window_tokens": self.tokens,
            "window_seconds": self.seconds,
        }


def per_token_phases(breakdown: dict[str, dict[str, float]], steps: int, tokens: int) -> dict[str, dict[str, float]]:
    """A phase breakdown (``ms_per_step`` and ``share`` per phase, over ``steps`` steps) with
    ``ms_per_1k_tokens`` added: the sides draw different batches (lengths differ from step to step), so per
    real token is the figure that compares two sides' phases."""
    return {phase: dict(figures, ms_per_1k_tokens=figures["ms_per_step"] * steps / max(tokens, 1) * 1e3)
            for phase, figures in breakdown.items()}


def paired_ratio(timing: SideTiming, baseline: SideTiming) -> float:
    """Median over rounds of (side's tokens/s / baseline's tokens/s in the same round)."""
    return statistics.median(a / b for a, b in zip(timing.windows, baseline.windows, strict=True))


def alternate(
    sides: Sequence[Side],
    windows: int,
    steps_per_window: int,
    warmup_steps: int,
    device: torch.device | str = "cpu",
    log=print,
) -> list[SideTiming]:
    """Warm every side up, then ``windows`` rounds of one timed window per side, in the order given."""
    if windows < 1 or steps_per_window < 1 or warmup_steps < 0:
        raise ValueError("need windows >= 1, steps_per_window >= 1, warmup_steps >= 0")
    device = torch.device(device)
    for side in sides:
        if warmup_steps:
            start = time.perf_counter()
            side.run_steps(warmup_steps)
            log(f"  warm-up  {side.name} [{side.precision}]: {warmup_steps} steps in {time.perf_counter() - start:.1f} s")
    timings = [SideTiming(side.name, side.precision) for side in sides]
    for window in range(windows):
        for side, timing in zip(sides, timings, strict=True):
            synchronize(device)
            start = time.perf_counter()
            tokens = side.run_steps(steps_per_window)
            seconds = time.perf_counter() - start
            timing.tokens.append(tokens)
            timing.seconds.append(seconds)
            log(f"  window {window + 1}/{windows} {side.name} [{side.precision}]: {tokens / seconds:,.0f} tokens/s")
    return timings


# ------------------------------------------------------------------------------------ GPU busy share, memory


def merge_intervals(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of the union of ``[start, end)`` intervals (overlaps counted once)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def busy_share(profiler_events, wall_seconds: float, device_type=None) -> float | None:
    """Union of device kernel intervals (``time_range`` in microseconds) / wall time; copies and memsets are
    left out. None when the profiler recorded no kernel at all (then there is nothing to report)."""
    device_type = device_type or torch.autograd.DeviceType.CUDA
    intervals = [
        (event.time_range.start, event.time_range.end)
        for event in profiler_events
        if event.device_type == device_type and not event.name.startswith(("Memcpy", "Memset"))
    ]
    if not intervals:
        return None
    return merge_intervals(intervals) / 1e6 / wall_seconds


@dataclass
class WindowObservation:
    """What one extra, observed window of a side gave."""

    steps: int
    seconds: float
    tokens: int
    gpu_busy_share: float | None  # None on CPU
    peak_memory_bytes: int | None  # torch.cuda.max_memory_allocated over the window; None on CPU
    step_memory_bytes: int | None  # that peak - memory allocated before the window; None on CPU

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "tokens_per_s_profiled": self.tokens / self.seconds,
            "gpu_busy_share": self.gpu_busy_share,
            "peak_memory_bytes": self.peak_memory_bytes,
            "step_memory_bytes": self.step_memory_bytes,
        }


def observe_window(side: Side, steps: int, device: torch.device | str) -> WindowObservation | None:
    """One extra window of ``side`` under the CUDA profiler with peak-memory statistics; None on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        tokens = side.run_steps(steps)
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device)
    return WindowObservation(steps, seconds, tokens, busy_share(prof.events(), seconds), peak, peak - resident)


def process_peak_rss() -> int:
    """Peak resident set size of this whole process so far, in bytes (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
