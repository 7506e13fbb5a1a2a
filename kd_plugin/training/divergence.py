"""Non-finite training stops the run: nothing garbage is exported or recorded as a success.

Neither PyTorch nor DeepSpeed stops on its own. A NaN or inf loss gives a non-finite gradient norm, which
DeepSpeed's ZeRO optimizer takes for an overflow: it skips the step (``engine.skipped_steps``), in fp32 and bf16
as under fp16 loss scaling, and the loop goes on. Before this module such a run exported the student it
started with (or one with NaN weights where nothing skipped) and Sacred recorded COMPLETED. Checked here:

* at every log point, the one host synchronisation per ``log_every`` steps (README "Speed"; the last step is
  always one), the reduced means of the total loss and of every weighted term must be finite;
* a log window in which every optimizer step was skipped is divergence too, unless an fp16 dynamic loss scaler
  can still lower its scale: every fp16 run skips a few steps while the scale comes down from 2^16, and a
  window of those is the scaler at work. At the floor (``min_loss_scale``), with a static scale, or in fp32/bf16
  a skipped step is a non-finite gradient. DeepSpeed's own "loss scale already at minimum" exception is the
  same event and is reported the same way; a run in which no optimizer step at all was applied is refused at
  its end whatever the scaler;
* before the final checkpoint and the export, the student's weights must be finite (every rank's share);
* a teacher (distillation) or an evaluated model (fine-tuning) whose weights are not finite is refused when
  it is loaded (:func:`check_finite_weights`, a :class:`~kd_plugin.errors.ConfigError` on the key that named it).

:class:`TrainingDiverged` carries the step and the term that went non-finite. It is an ordinary exception, so
Sacred records the run FAILED; :func:`exit_on_divergence` turns it into one line on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.checkpoint_format import STEP_DIR
from kd_plugin.training.distributed import gather

EXIT_STATUS = 1  # an ordinary failure: not a configuration error (2), not a signal (128 + n)
SCALE_AT_MINIMUM = "loss scale already at minimum"  # DeepSpeed's DynamicLossScaler, raised when it cannot go lower
HINT = "lower optim.lr, T or the loss weights, or check the teacher's outputs and the data"


class TrainingDiverged(RuntimeError):
    """Training went non-finite at ``step``: ``term`` (a logged loss name, ``gradient norm``, or ``student
    weight <name>``) is ``value`` (``nan``, ``inf``, ``-inf`` or ``not finite``)."""

    def __init__(self, step: int, total_steps: int, term: str, value: str, detail: str = "",
                 last_good: tuple[Path, int] | None = None):
        self.step, self.total_steps, self.term, self.value = step, total_steps, term, value
        self.detail, self.last_good = detail, last_good
        if last_good is None:
            where = "no checkpoint from before it is left"
        else:
            where = f"the last good checkpoint is {last_good[0]} (step {last_good[1]})"
        detail = f" ({detail})" if detail else ""
        super().__init__(f"{term} is {value} at step {step} (of {total_steps}){detail}; {where}; {HINT}")

    def record(self) -> dict[str, Any]:
        """What the run's ``info.diverged`` keeps (the run is recorded FAILED)."""
        return {"step": self.step, "term": self.term, "value": self.value, "detail": self.detail,
                "last_good_checkpoint": None if self.last_good is None else str(self.last_good[0])}


@contextlib.contextmanager
def exit_on_divergence(info: dict[str, Any] | None = None) -> Iterator[None]:
    """One line ``training diverged: ...`` on stderr and exit status 1 for :class:`TrainingDiverged`, the
    details into ``info["diverged"]`` (the run's info: saved by Sacred's last heartbeat).

    Use it inside the Sacred main function: the ``SystemExit`` passes through Sacred, which records the run
    FAILED with this exception as the cause in its ``fail_trace`` (it prints a stack trace for an exception
    that reaches it, and only ``SystemExit`` leaves its command line quietly)."""
    try:
        yield
    except TrainingDiverged as err:
        if info is not None:
            info["diverged"] = err.record()
        with contextlib.suppress(OSError):  # a terminal that is gone must not turn this into a traceback
            print(f"training diverged: {err}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS) from err


def _kind(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def first_non_finite(means: Mapping[str, float]) -> tuple[str, str, list[str]] | None:
    """(name, kind, other non-finite names) of the first non-finite mean, a term before the total ``loss``
    (a term names the cause; the total is non-finite with it), or None."""
    bad = [name for name, value in means.items() if not math.isfinite(value)]
    if not bad:
        return None
    terms = sorted(name for name in bad if name != "loss") or bad
    return terms[0], _kind(means[terms[0]]), terms[1:]


def last_checkpoint_at_or_before(checkpoint_dir: Path, step: int) -> tuple[Path, int] | None:
    """The newest ``step<N>`` checkpoint folder with N <= ``step`` (the weights a finite log point vouched for)."""
    found = []
    if checkpoint_dir.is_dir():
        for path in checkpoint_dir.iterdir():
            match = STEP_DIR.match(path.name)
            if match and path.is_dir() and int(match.group(1)) <= step:
                found.append((int(match.group(1)), path))
    if not found:
        return None
    n, path = max(found)
    return path, n


def loss_scale_can_drop(optimizer) -> bool:
    """Whether an fp16 dynamic loss scaler can still lower its scale (then a skipped step is the scaler's search
    for a scale that fits, not divergence). False in fp32/bf16 and with a static scale."""
    scaler = getattr(optimizer, "loss_scaler", None)  # ZeRO stages 1-3
    if scaler is not None and getattr(scaler, "dynamic", False):
        return scaler.cur_scale > scaler.min_scale
    config = getattr(optimizer, "loss_scale_config", None)  # DeepSpeed's FP16_Optimizer (no ZeRO)
    if config is not None and getattr(config, "dynamic_loss_scale", False):
        return config.cur_scale > config.min_loss_scale
    return False


class DivergenceWatch:
    """The loop's checks at its log points; needs nothing from the device beyond the reduced means.

    ``start_step`` and ``skipped_steps``: where this process starts (0, or a resumed checkpoint's step) and the
    engine's skip counter then (restored from a checkpoint)."""

    def __init__(self, total_steps: int, checkpoint_dir: Path, start_step: int = 0, skipped_steps: int = 0):
        self.total_steps = total_steps
        self.checkpoint_dir = checkpoint_dir
        self.last_finite_step = start_step  # the last log point whose losses were all finite (or the start)
        self._window_start, self._skipped_at_start = start_step, skipped_steps
        self.applied_any = False  # an optimizer step of this process was applied (not skipped)

    def diverged(self, step: int, term: str, value: str, detail: str = "") -> TrainingDiverged:
        return TrainingDiverged(step, self.total_steps, term, value, detail,
                                last_checkpoint_at_or_before(self.checkpoint_dir, self.last_finite_step))

    def check(self, step: int, means: Mapping[str, float], skipped_steps: int, optimizer, final: bool,
              log_every: int) -> None:
        """At a log point: raise :class:`TrainingDiverged` for a non-finite mean or a window of skipped steps."""
        found = first_non_finite(means)
        if found is not None:
            term, kind, others = found
            also = f"also {', '.join(others)}; " if others else ""
            read = f", read every {log_every} steps" if log_every > 1 else ""
            raise self.diverged(step, term, kind, f"{also}the last finite losses were at step "
                                f"{self.last_finite_step}{read}")
        window, skipped = step - self._window_start, skipped_steps - self._skipped_at_start
        if skipped < window:
            self.applied_any = True
        elif window > 0 and (not loss_scale_can_drop(optimizer) or (final and not self.applied_any)):
            first = self._window_start + 1
            steps = f"step {first}" if first == step else f"steps {first}-{step}"
            raise self.diverged(step, "gradient norm", "not finite",
                                f"every optimizer step of {steps} was skipped by DeepSpeed's overflow check; "
                                "the weights did not change; under fp16, bf16 does not overflow")
        self.last_finite_step = step
        self._window_start, self._skipped_at_start = step, skipped_steps

    def check_weights(self, step: int, student: nn.Module) -> None:
        """Every rank's share of the student's weights is finite (before the final checkpoint and the export)."""
        found = [item for rank in gather(non_finite_tensors(local_parameters(student))) for item in rank]
        if found:
            name, nans, _ = found[0]
            raise self.diverged(step, f"student weight {name}", "nan" if nans else "inf", describe(found))

    def from_engine_error(self, error: BaseException, step: int) -> TrainingDiverged | None:
        """DeepSpeed's 'loss scale already at minimum' exception as divergence at ``step``; None for others."""
        if SCALE_AT_MINIMUM not in str(error).lower():
            return None
        return self.diverged(step, "gradient norm", "not finite", "overflow at the minimum fp16 loss scale")


def non_finite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, int, int]]:
    """(name, NaN count, inf count) of every tensor holding a value that is not finite.

    Every check is queued on its tensor's device before the first is read back (one wait on a GPU); the counts
    are taken only for the (rare) tensors that fail."""
    named = [(name, t.detach()) for name, t in named if t.is_floating_point() and t.numel()]
    flags = [torch.isfinite(t).all() for _, t in named]
    finite = [bool(flag) for flag in flags]
    return [(name, int(torch.isnan(t).sum()), int(torch.isinf(t).sum()))
            for (name, t), ok in zip(named, finite, strict=True) if not ok]


def local_parameters(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The parameters this rank holds (its partition under ZeRO-3, where a parameter itself is a placeholder)."""
    for name, p in module.named_parameters():
        yield name, getattr(p, "ds_tensor", p)


def describe(found: list[tuple[str, int, int]], limit: int = 3) -> str:
    """``bert.embeddings.word_embeddings.weight (1 NaN), ... and 4 more tensors``."""
    parts = []
    for name, nans, infs in found[:limit]:
        counts = [f"{n} {label}" for n, label in ((nans, "NaN"), (infs, "inf")) if n]
        parts.append(f"{name} ({', '.join(counts)})")
    more = f" and {len(found) - limit} more tensors" if len(found) > limit else ""
    return ", ".join(parts) + more


def check_finite_weights(model: nn.Module | Iterable[tuple[str, torch.Tensor]], key: str, what: str) -> None:
    """Refuse a model with a NaN or inf weight: ``ConfigError(key, ...)`` naming the first tensors and counts."""
    named = local_parameters(model) if isinstance(model, nn.Module) else model
    found = non_finite_tensors(named)
    if found:
        raise ConfigError(key, f"{what} has weights that are not finite: {describe(found)}",
                          "a model whose weights are all finite (a diverged distillation leaves no student)")
