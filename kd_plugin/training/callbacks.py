"""What happens after each optimizer step besides training: one small callback per concern.

The loop hands every callback a :class:`StepReport`; metrics are present only at log points (every
``log_every`` steps and the last step), so no callback forces a device synchronisation in between. Only rank 0
gets callbacks (:func:`default_callbacks`): one local file, one tracker, one progress bar per job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from kd_plugin.runtime.progress import progress_line

LogScalar = Callable[[str, float, int], None]  # Sacred's run.log_scalar(name, value, step)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepReport:
    step: int  # optimizer steps done
    total_steps: int  # the schedule's length
    metrics: dict[str, float] | None  # at log points: loss terms, lr, grad_norm, tokens_per_second


class StepCallback(Protocol):
    def on_step(self, report: StepReport) -> None: ...

    def close(self) -> None: ...


class MetricsFile:
    """``<output_dir>/metrics.jsonl``: a plain local copy of every logged point, independent of any tracker."""

    def __init__(self, output_dir: Path):
        self.path = metrics_path(output_dir)

    def on_step(self, report: StepReport) -> None:
        if report.metrics is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(dict(report.metrics, step=report.step)) + "\n")

    def close(self) -> None:
        pass


def metrics_path(output_dir: Path) -> Path:
    return output_dir / "metrics.jsonl"


def truncate_metrics(output_dir: Path, last_step: int) -> int:
    """Drop the points after ``last_step`` from ``metrics.jsonl`` (a resumed run logs them again from its
    checkpoint, so the file stays one curve); returns how many lines were dropped."""
    path = metrics_path(output_dir)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= last_step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return len(lines) - len(kept)


class ScalarLog:
    """Every logged metric to the experiment tracker (Sacred's ``log_scalar``; the observer stores it)."""

    def __init__(self, log_scalar: LogScalar):
        self.log_scalar = log_scalar

    def on_step(self, report: StepReport) -> None:
        for name, value in (report.metrics or {}).items():
            self.log_scalar(name, float(value), report.step)

    def close(self) -> None:
        pass


class ProgressBar:
    """A tqdm bar over optimizer steps; loss and tokens/s refreshed at log points."""

    def __init__(self, total_steps: int, initial: int):
        self.bar = tqdm(total=total_steps, initial=initial, desc="distill", unit="step", dynamic_ncols=True)

    def on_step(self, report: StepReport) -> None:
        self.bar.update(1)
        if report.metrics is not None:
            self.bar.set_postfix(loss=f"{report.metrics['loss']:.4f}",
                                 tok_s=f"{report.metrics['tokens_per_second']:.0f}")

    def close(self) -> None:
        self.bar.close()


class ProgressLog:
    """Without a bar (``progress_bar=False``: batch jobs, logs to a file): one plain line per log point, with the
    rate and the time left, so a log file shows progress without tqdm's carriage returns."""

    def __init__(self, total_steps: int, initial: int, desc: str = "distill",
                 clock: Callable[[], float] = time.monotonic):
        self.total_steps, self.initial, self.desc, self.clock = total_steps, initial, desc, clock
        self.started = clock()

    def on_step(self, report: StepReport) -> None:
        if report.metrics is not None:
            logger.info(progress_line(self.desc, report.step, self.total_steps, self.initial,
                                      self.clock() - self.started, report.metrics))

    def close(self) -> None:
        pass


def default_callbacks(output_dir: Path, is_main: bool, log_scalar: LogScalar | None, progress_bar: bool,
                      total_steps: int, initial_step: int) -> list[StepCallback]:
    """Rank 0: metrics.jsonl, the tracker (when given) and the progress bar (or, without it, a progress line per
    log point); other ranks: none."""
    if not is_main:
        return []
    callbacks: list[StepCallback] = [MetricsFile(output_dir)]
    if log_scalar is not None:
        callbacks.append(ScalarLog(log_scalar))
    callbacks.append(ProgressBar(total_steps, initial_step) if progress_bar else ProgressLog(total_steps, initial_step))
    return callbacks
