"""Per-phase wall time of the training step (data, teacher forward, student forward, loss, backward, optimizer
step, callbacks), for profiling and the benchmark (``performance.profile_phases``).

Timing a phase of GPU work needs a device synchronisation at both ends, which is exactly what a fast loop must
not do, so the timer is off by default and then costs one attribute lookup per phase.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

_OFF = contextlib.nullcontext()


class PhaseTimer:
    def __init__(self, enabled: bool = False, device: torch.device | str = "cpu"):
        self.enabled = enabled
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self.steps = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start

    def phase(self, name: str):
        """``with timer.phase("backward"): ...``; a no-op context when the timer is off."""
        return self._timed(name) if self.enabled else _OFF

    def step_done(self) -> None:
        self.steps += 1

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Per phase: milliseconds per optimizer step and share of the timed total."""
        total = sum(self.seconds.values()) or 1.0
        steps = max(self.steps, 1)
        return {name: {"ms_per_step": 1e3 * s / steps, "share": s / total} for name, s in self.seconds.items()}
