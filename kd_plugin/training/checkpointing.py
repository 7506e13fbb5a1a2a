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
import torch.distributed as dist

from kd_plugin.errors import ConfigError

LATEST = "latest"  # DeepSpeed writes the newest tag into this file


def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_ranks_rng_state() -> list[dict[str, Any]]:
    """Every rank's RNG state, gathered: DeepSpeed writes ``client_state`` from rank 0's file only."""
    state = capture_rng_state()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


def client_state(step: int, sampler_state: dict[str, int], tokens_seen: int, plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "kd_step": step,
        "kd_sampler": dict(sampler_state),
        "kd_rng": all_ranks_rng_state(),
        "kd_tokens_seen": tokens_seen,
        "kd_plan": dict(plan),
    }


def check_compatible(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A resumed run must continue the same schedule on the same data order."""
    for key, value in current.items():
        if key in saved and saved[key] != value:
            raise ConfigError("resume", f"the checkpoint was written with {key}={saved[key]!r}, this run has "
                              f"{key}={value!r}", f"the checkpoint's {key} (resume with the same configuration)")


def find_checkpoint_dir(path: str | Path) -> Path:
    """Accept ``<output_dir>/checkpoints`` or ``<output_dir>`` itself."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if has_checkpoint(candidate):
            return candidate
    raise ConfigError("resume", f"no DeepSpeed checkpoint in {str(path)!r} (no '{LATEST}' file there or in "
                      "its checkpoints/ folder)", "<output_dir>/checkpoints of an earlier run, or that <output_dir>")


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / LATEST).is_file()
