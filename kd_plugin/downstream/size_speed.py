"""How much smaller and faster the student is: parameter counts and inference throughput, teacher vs student.

* Parameters are counted on the encoders (no MLM head, no classifier, no pooler; see
  :func:`kd_plugin.downstream.model_loading.load_encoder`), each shared tensor once. "embedding" is every
  ``nn.Embedding`` weight (word, position, token-type); "non_embedding" the rest (layers and embedding LayerNorm).
* Throughput is encoder forward passes on the same random token ids (same batch size and sequence length for
  both models, every position attended) under ``torch.inference_mode``, after warm-up passes, with the torch
  thread count in force. A repeat times enough batches to last at least ``min_repeat_seconds``; teacher and
  student repeats alternate, so a load change on the machine hits both; the median repeat is reported.
  ``speedup`` = student sequences/s / teacher sequences/s (the paper: 60 % faster, i.e. 1.6). The 1-minute
  load average before and after is recorded: on a shared machine, use ``--threads 1``.

Standalone::

    python -m kd_plugin.downstream.size_speed --teacher bert-tiny --student outputs/distill/<run>/student
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from kd_plugin.downstream.model_loading import load_encoder, resolve_model


@dataclass(frozen=True)
class ParameterCount:
    total: int
    embedding: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "embedding": self.embedding, "non_embedding": self.non_embedding}


def count_parameters(model: nn.Module) -> ParameterCount:
    """Every parameter tensor once (tied weights are shared tensors), split into embedding / the rest."""
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    params = list(model.parameters())  # de-duplicated by nn.Module
    return ParameterCount(
        total=sum(p.numel() for p in params),
        embedding=sum(p.numel() for p in params if id(p) in embedding_ids),
    )


@dataclass(frozen=True)
class SpeedSettings:
    batch_size: int = 32
    seq_length: int = 128
    repeats: int = 5
    warmup: int = 2
    min_repeat_seconds: float = 0.2
    seed: int = 0


def _random_inputs(vocab_size: int, settings: SpeedSettings) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.batch_size, settings.seq_length)
    return {
        "input_ids": torch.randint(0, vocab_size, shape, generator=generator),  # (bs, seq_len)
        "attention_mask": torch.ones(shape, dtype=torch.long),  # (bs, seq_len)
    }


def _seconds(model: nn.Module, inputs: dict[str, torch.Tensor], iterations: int) -> float:
    """Wall seconds per batch, averaged over ``iterations`` forward passes."""
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(iterations):
            model(**inputs)
        return (time.perf_counter() - start) / iterations


class _Timer:
    """One model's repeated timings on fixed inputs."""

    def __init__(self, model: nn.Module, inputs: dict[str, torch.Tensor], settings: SpeedSettings):
        self.model, self.inputs, self.settings = model.eval(), inputs, settings
        warm = [_seconds(self.model, inputs, 1) for _ in range(max(1, settings.warmup))]
        self.iterations = max(1, int(settings.min_repeat_seconds / max(min(warm), 1e-6)) + 1)
        self.per_batch: list[float] = []

    def repeat(self) -> None:
        self.per_batch.append(_seconds(self.model, self.inputs, self.iterations))

    def summary(self) -> dict[str, float | int | list[float]]:
        median = statistics.median(self.per_batch)
        return {
            "sequences_per_second": self.settings.batch_size / median,
            "seconds_per_batch": median,
            "seconds_per_batch_repeats": self.per_batch,
            "batches_per_repeat": self.iterations,
        }


def size_speed_report(
    student: nn.Module,
    teacher: nn.Module | None = None,
    settings: SpeedSettings | None = None,
    student_name: str = "student",
    teacher_name: str | None = "teacher",
) -> dict:
    """Parameters and throughput of ``student`` (and ``teacher``), with ratios when a teacher is given.

    Both models must take ``input_ids`` / ``attention_mask``; the random ids are drawn below the smaller vocabulary.
    """
    settings = settings or SpeedSettings()
    models = {"student": student} | ({"teacher": teacher} if teacher is not None else {})
    vocab = min(m.config.vocab_size for m in models.values())
    inputs = _random_inputs(vocab, settings)
    load_before = os.getloadavg()[0]
    timers = {role: _Timer(m, inputs, settings) for role, m in models.items()}
    for _ in range(settings.repeats):
        for timer in timers.values():  # alternate, so drift in the machine's load hits both alike
            timer.repeat()
    report: dict = {
        "settings": asdict(settings) | {"threads": torch.get_num_threads(), "inference_mode": True},
        # other jobs on the cores slow both models (multi-threaded torch a lot): judge the numbers with this
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    names = {"student": student_name, "teacher": teacher_name}
    for role, model in models.items():
        report[role] = {"name": names[role], "layers": _n_layers(model), "parameters": count_parameters(model).to_dict(),
                        **timers[role].summary()}
    if teacher is not None:
        s, t = report["student"], report["teacher"]
        report["parameter_ratio"] = s["parameters"]["total"] / t["parameters"]["total"]
        report["non_embedding_parameter_ratio"] = (
            s["parameters"]["non_embedding"] / t["parameters"]["non_embedding"]
            if t["parameters"]["non_embedding"] else float("nan"))
        report["speedup"] = s["sequences_per_second"] / t["sequences_per_second"]
    return report


def _n_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)


def compare(student: str, teacher: str | None = None, settings: SpeedSettings | None = None) -> dict:
    """Load both encoders by name or directory and report (what the finetune run records as ``size_speed``)."""
    student_model = load_encoder(resolve_model(student, "size_speed.student"), key="size_speed.student").model
    teacher_model = None
    if teacher is not None:
        teacher_model = load_encoder(resolve_model(teacher, "size_speed.reference"), key="size_speed.reference").model
    return size_speed_report(student_model, teacher_model, settings, student_name=student, teacher_name=teacher)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True, help="model directory or catalogue name")
    parser.add_argument("--teacher", default=None, help="model directory or catalogue name (optional)")
    defaults = SpeedSettings()
    for name in ("batch_size", "seq_length", "repeats", "warmup"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SpeedSettings(args.batch_size, args.seq_length, args.repeats, args.warmup)
    report = compare(args.student, args.teacher, settings)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
