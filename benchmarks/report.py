"""What a benchmark run reports: the device it ran on, a JSON results file, and a markdown table.

Results go to ``<out>/<YYYY-MM-DD>-<device>[-<workload>].json`` (``device`` = ``cpu`` or a slug of the GPU
name, e.g. ``nvidia-h200``; ``workload`` only for workloads other than the default ``bert``, e.g. ``gpt2``); a
second run on the same day, device and workload gets ``-2``, ``-3``, ... rather than overwriting.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

import torch


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def device_slug(device: torch.device) -> str:
    """``cpu``, or the GPU's name in lower case with runs of other characters as ``-`` (``nvidia-h200``)."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def device_summary(device: torch.device | str) -> dict:
    """Device name, library versions, threads, and which precisions the device computes natively."""
    device = torch.device(device)
    summary = {
        "device": device.type,
        "slug": device_slug(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "deepspeed": _version("deepspeed"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        summary.update(
            gpu=torch.cuda.get_device_name(device),
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            bf16_supported=torch.cuda.is_bf16_supported(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    else:
        flags = _cpu_flags()
        summary.update(
            gpu=None,
            torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),  # the widest SIMD torch uses here
            bf16_native=bool(flags & {"avx512_bf16", "amx_bf16"}),  # else bf16 matmuls run a slow fallback
            cpu_simd_flags=sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        )
    return summary


def results_path(out_dir: str | os.PathLike, device: torch.device, date: dt.date | None = None,
                 workload: str | None = None) -> Path:
    """A fresh ``<out_dir>/<YYYY-MM-DD>-<device>[-<workload>][-N].json`` (the folder is created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{(date or dt.date.today()).isoformat()}-{device_slug(torch.device(device))}"
    if workload:
        stem += f"-{workload}"
    path, n = out / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = out / f"{stem}-{n}.json"
    return path


def write_results(path: str | os.PathLike, results: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def _flops(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e12:.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.1f} GFLOP/s"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def _memory(peak: int | None, step: int | None) -> str:
    return _bytes(peak) if step is None else f"{_bytes(peak)} (step +{_bytes(step)})"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown_table(rows: Sequence[dict]) -> str:
    """One line per side: ``side, precision, median_tokens_per_s, ratio_vs_baseline (paired_ratio_vs_baseline),
    model_flops_per_s, share_of_peak, gpu_busy_share, peak_memory_bytes (step_memory_bytes)`` (missing values
    print as ``-``)."""
    lines = [
        "| side | precision | median tokens/s (min-max) | vs baseline | model FLOP/s | of matmul peak | GPU busy "
        "| peak memory |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ratio, paired = row.get("ratio_vs_baseline"), row.get("paired_ratio_vs_baseline")
        versus = "-" if ratio is None else f"{ratio:.2f}x" + ("" if paired is None else f" (paired {paired:.2f}x)")
        lines.append(
            f"| {row['side']} | {row['precision']} | {row['median_tokens_per_s']:,.0f} "
            f"({row['min_tokens_per_s']:,.0f}-{row['max_tokens_per_s']:,.0f}) | "
            f"{versus} | {_flops(row.get('model_flops_per_s'))} | "
            f"{_share(row.get('share_of_peak'))} | {_share(row.get('gpu_busy_share'))} | "
            f"{_memory(row.get('peak_memory_bytes'), row.get('step_memory_bytes'))} |"
        )
    return "\n".join(lines)
