"""What a checkpoint holds besides the engine's own state: data position, RNG states, step.

Weights, optimizer and LR-scheduler state go through ``engine.save_checkpoint`` / ``load_checkpoint``; this
module only builds and restores the ``client_state`` so a resumed run continues the same schedule on the same
batches with the same dropout draws. Masking needs no RNG state: each batch's mask is seeded by its position.
"""

from __future__ import annotations

import errno
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_plugin.runtime.checkpoint_format import (
    LATEST,
    PLAN_KEY,
    RNG_KEY,
    RUN_ID_KEY,
    SAMPLER_KEY,
    STEP_DIR,
    STEP_KEY,
    STEP_TAG,
    TOKENS_SEEN_KEY,
    check_compatible,
)
from kd_plugin.training.disk_space import (
    CheckpointSpaceError,
    check_space,
    free_bytes,
    human,
    is_out_of_space,
)
from kd_plugin.training.distributed import barrier, gather


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
    return gather(capture_rng_state())


def client_state(step: int, sampler_state: dict[str, int], tokens_seen: int, plan: dict[str, Any],
                 run_id: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The loop's state (the ``kd_*`` resumption keys of :mod:`kd_plugin.runtime.checkpoint_format`), plus
    ``extra`` keys (what ``python -m kd_plugin.export`` reads)."""
    return {
        **(extra or {}),
        STEP_KEY: step,
        SAMPLER_KEY: dict(sampler_state),
        RNG_KEY: all_ranks_rng_state(),
        TOKENS_SEEN_KEY: tokens_seen,
        PLAN_KEY: dict(plan),
        RUN_ID_KEY: run_id,  # the run that wrote the checkpoint (a resumed run links back to it)
    }


def save(engine, checkpoint_dir: Path, step: int, sampler_state: dict[str, int], tokens_seen: int,
         plan: dict[str, Any], run_id: Any = None, extra: dict[str, Any] | None = None) -> None:
    """``engine.save_checkpoint`` under the step's tag, with the loop's own state as client state."""
    client = client_state(step, sampler_state, tokens_seen, plan, run_id, extra)
    engine.save_checkpoint(str(checkpoint_dir), tag=STEP_TAG.format(step), client_state=client)


def load(engine, checkpoint_dir: Path, plan: dict[str, Any], rank: int) -> tuple[Path, dict[str, Any]]:
    """Restore weights, optimizer, schedule and this rank's RNGs; return (path, client state).

    Refuses a checkpoint written with another batch plan, world size, seed, schedule length or corpus.
    """
    path, client = engine.load_checkpoint(str(checkpoint_dir))
    if path is None:
        raise RuntimeError(f"resume={checkpoint_dir}: DeepSpeed could not load the checkpoint")
    check_compatible(client.get(PLAN_KEY, {}), plan)
    restore_rng_state(client[RNG_KEY][rank])
    return Path(path), client


def prune(checkpoint_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` step folders (never the one ``latest`` names); rank 0 only, after
    every rank has finished writing. Returns what was deleted."""
    latest = (checkpoint_dir / LATEST).read_text().strip() if (checkpoint_dir / LATEST).exists() else None
    steps = sorted(p for p in checkpoint_dir.iterdir() if p.is_dir() and STEP_DIR.match(p.name))
    doomed = [p for p in steps[:-keep] if p.name != latest] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


class Checkpointer:
    """Writes and restores the run's checkpoints: the engine's state plus the loop's and the export's keys."""

    def __init__(self, engine, checkpoint_dir: Path, plan: dict[str, Any], keep: int, is_main: bool,
                 run_id: Any = None, export_keys: dict[str, Any] | None = None, needed_bytes: int = 0):
        self.engine = engine
        self.needed_bytes = needed_bytes  # estimated size of one checkpoint (disk_space.checkpoint_bytes)
        self.checkpoint_dir = checkpoint_dir
        self.plan = plan  # what must not change between a run and its resumption
        self.keep = keep
        self.is_main = is_main
        self.run_id = run_id
        self.export_keys = export_keys or {}

    def save(self, step: int, sampler_state: dict[str, int], tokens_seen: int) -> None:
        """Write the checkpoint of ``step``; a full disk is one clear error, checked first and on failure."""
        check_space(self.checkpoint_dir, self.needed_bytes)
        try:
            save(self.engine, self.checkpoint_dir, step, sampler_state, tokens_seen, self.plan, self.run_id,
                 self.export_keys)
        except (OSError, RuntimeError) as err:
            if is_out_of_space(err):
                raise CheckpointSpaceError(errno.ENOSPC, f"no space left on {self.checkpoint_dir}: "
                                           f"{human(free_bytes(self.checkpoint_dir))} free, checkpoint needs "
                                           f"~{human(self.needed_bytes)}") from err
            raise
        barrier()
        if self.is_main:
            prune(self.checkpoint_dir, self.keep)

    def load(self, checkpoint_dir: Path, rank: int) -> tuple[Path, dict[str, Any]]:
        return load(self.engine, checkpoint_dir, self.plan, rank)
