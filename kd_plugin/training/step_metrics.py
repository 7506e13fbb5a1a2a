"""Per-optimizer-step metrics: loss terms averaged over the accumulation window and over ranks, throughput.

Logging is throttled (every ``log_every`` optimizer steps, plus the last step) so a long run cannot flood the
tracker: each scalar series has at most ``max_steps / log_every + 1`` points.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist


class AccumulationWindow:
    """Sums weighted loss terms over the micro-batches of one optimizer step."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.micro_batches = 0
        self.tokens = 0

    def add(self, losses: dict[str, torch.Tensor], n_tokens: int) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.micro_batches += 1
        self.tokens += n_tokens

    def reduce(self) -> tuple[dict[str, float], int]:
        """Mean of each term over micro-batches and ranks; total tokens over ranks."""
        names = sorted(self.sums)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        # NCCL reduces only CUDA tensors; gloo (CPU) only CPU ones.
        device = "cuda" if distributed and dist.get_backend() == "nccl" else "cpu"
        values = torch.tensor([self.sums[n] for n in names] + [self.micro_batches, self.tokens],
                              dtype=torch.float64, device=device)
        if distributed:
            dist.all_reduce(values)
        *sums, micro_batches, tokens = values.tolist()
        means = {n: s / micro_batches for n, s in zip(names, sums, strict=True)}
        self.__init__()
        return means, int(tokens)


class ThrottledLogger:
    """Calls ``log(name, value, step)`` for each metric every ``log_every`` steps (and on the final step)."""

    def __init__(self, log: Callable[[str, float, int], None] | None, log_every: int, max_steps: int):
        self.log = log
        self.log_every = log_every
        self.max_steps = max_steps
        self.interval_tokens = 0
        self.interval_start = time.perf_counter()

    def step(self, step: int, metrics: dict[str, float], tokens: int) -> dict[str, float] | None:
        self.interval_tokens += tokens
        if step % self.log_every and step != self.max_steps:
            return None
        elapsed = time.perf_counter() - self.interval_start
        metrics = dict(metrics, tokens_per_second=self.interval_tokens / max(elapsed, 1e-9))
        self.interval_tokens, self.interval_start = 0, time.perf_counter()
        if self.log is not None:
            for name, value in metrics.items():
                self.log(name, float(value), step)
        return metrics
