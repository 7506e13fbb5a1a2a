"""What a checkpoint holds besides the engine's own state: data position, RNG states, step.

Weights, optimizer and LR-scheduler state go through ``engine.save_checkpoint`` / ``load_checkpoint``; this
module only builds and restores the ``client_state`` so a resumed run continues the same schedule on the same
batches with the same dropout draws. Masking needs no RNG state: each batch's mask is seeded by its position.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"  # DeepSpeed writes the newest tag into this file


def capture_rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def client_state(step: int, sampler_state: dict[str, int], tokens_seen: int) -> dict[str, Any]:
    return {
        "kd_step": step,
        "kd_sampler": dict(sampler_state),
        "kd_rng": capture_rng_state(),
        "kd_tokens_seen": tokens_seen,
    }


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / LATEST).is_file()
