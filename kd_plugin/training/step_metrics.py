"""Per-optimizer-step metrics without host synchronisation.

The loss terms of each micro-batch are summed on the device (``AccumulationWindow``); only at a log point
(every ``log_every`` optimizer steps, and the last step) are they averaged over the step's micro-batches and
the ranks and copied to the host, once. Between log points nothing waits for the device. A logged point is
the mean over the micro-batches of that optimizer step, as in the public code; ``tokens_per_second`` covers
the whole interval since the previous log point.
"""

from __future__ import annotations

import time

import torch

from kd_plugin.training.distributed import all_ranks_sum


class AccumulationWindow:
    """Sums the weighted loss terms of the micro-batches of one optimizer step, on the device."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None  # (n_terms,) on the device
        self.micro_batches = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        if not self.names:
            self.names = sorted(losses)
        values = torch.stack([losses[name].detach().float() for name in self.names])  # (n_terms,)
        self.sums = values if self.sums is None else self.sums + values
        self.micro_batches += 1

    def reset(self) -> None:
        self.sums, self.micro_batches = None, 0

    def reduce(self, tokens: int) -> tuple[dict[str, float], int]:
        """Mean of each term over the step's micro-batches and over ranks, and ``tokens`` (this rank's count
        since the last reduction) summed over ranks: one all-reduce, one host copy."""
        counts = self.sums.new_tensor([self.micro_batches, tokens], dtype=torch.float64)
        *sums, micro_batches, total_tokens = all_ranks_sum(torch.cat([self.sums.double(), counts])).tolist()
        self.reset()
        means = {name: total / micro_batches for name, total in zip(self.names, sums, strict=True)}
        return means, int(total_tokens)


class Throughput:
    """Tokens per second between two log points (the device was synchronised at both by the reduction)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def rate(self, tokens: int) -> float:
        now = time.perf_counter()
        rate = tokens / max(now - self.start, 1e-9)
        self.start = now
        return rate
