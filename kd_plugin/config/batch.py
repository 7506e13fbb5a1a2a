"""The batch plan: micro-batch x accumulation x world size = sequences per optimizer step.

DeepSpeed checks the same identity (``train_batch_size``); the plan is computed once, here, from the
``batch.*`` block and the world size, and everything else (engine config, sampler, resume checks) reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from kd_plugin import validation as values
from kd_plugin.config.declarations import Block, setting
from kd_plugin.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """train batch = micro-batch x accumulation x world size."""

    micro_batch_size: int
    gradient_accumulation_steps: int
    world_size: int

    @property
    def train_batch_size(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.world_size


@dataclass(frozen=True)
class BatchSettings:
    """``batch.*``: a micro-batch size and either an accumulation count or a target effective batch."""

    micro_batch_size: int = setting(16, "sequences per rank per forward pass", values.integer)
    gradient_accumulation_steps: int | None = setting(None, "null = 1, or derived from effective_batch_size",
                                                      partial(values.integer, allow_none=True))
    effective_batch_size: int | None = setting(None, "target sequences per optimizer step (the paper: ~4096)",
                                               partial(values.integer, allow_none=True))

    @classmethod
    def from_dict(cls, batch: Mapping[str, Any]) -> BatchSettings:
        return cls(**BATCH.parse(batch))

    def plan(self, world_size: int) -> BatchPlan:
        """Accumulation from an explicit value, or from the target effective batch (which must be reachable)."""
        per_pass = self.micro_batch_size * world_size  # sequences per forward pass over all ranks
        if self.effective_batch_size is None:
            return BatchPlan(self.micro_batch_size, self.gradient_accumulation_steps or 1, world_size)
        if self.effective_batch_size % per_pass:
            below = self.effective_batch_size // per_pass * per_pass
            nearest = " or ".join(str(v) for v in (below, below + per_pass) if v >= per_pass)
            raise ConfigError(
                "batch.effective_batch_size",
                f"{self.effective_batch_size} is not a multiple of micro_batch_size x world size = "
                f"{self.micro_batch_size} x {world_size} = {per_pass}",
                f"a multiple of {per_pass}, nearest {nearest} (or change batch.micro_batch_size)",
            )
        accumulation = self.effective_batch_size // per_pass
        if self.gradient_accumulation_steps not in (None, accumulation):
            raise ConfigError(
                "batch.gradient_accumulation_steps",
                f"{self.gradient_accumulation_steps} conflicts with effective_batch_size="
                f"{self.effective_batch_size} (which needs {accumulation})",
                "set only one of the two (the other null)",
            )
        return BatchPlan(self.micro_batch_size, accumulation, world_size)


BATCH = Block.of("batch", "a micro-batch size and either an accumulation count or a target effective batch",
                 BatchSettings)
BATCH_KEYS = BATCH.names()
