"""Make ``deepspeed.initialize`` work with or without the ``deepspeed`` launcher.

Under the launcher, RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* are set (the local rank also arrives as
``--local_rank=N`` unless ``--no_local_rank`` is used; ``strip_local_rank_argument`` removes it before Sacred
parses the command line). Without the launcher, DeepSpeed would try MPI discovery and fail on ``import mpi4py``
(FIELD_NOTES §2), so a plain ``python experiments/distill.py`` gets a one-process world on a free port.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchInfo:
    rank: int
    local_rank: int
    world_size: int
    launched: bool  # True when a launcher set the environment

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def strip_local_rank_argument(argv: list[str]) -> list[str]:
    """Remove ``--local_rank=N`` / ``--local_rank N`` (inserted by the launcher) and export it as LOCAL_RANK."""
    cleaned, skip_next = [], False
    for i, arg in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        if arg.startswith("--local_rank=") or arg.startswith("--local-rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
            continue
        if arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            skip_next = True
            continue
        cleaned.append(arg)
    return cleaned


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_info() -> LaunchInfo:
    """Read the launch environment without changing it."""
    return LaunchInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        launched="WORLD_SIZE" in os.environ and "RANK" in os.environ,
    )


def ensure_launch_env() -> LaunchInfo:
    """Fill in a single-process world when no launcher did (idempotent)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    return launch_info()


if __name__ == "__main__":  # pragma: no cover - debugging aid
    print(launch_info(), sys.argv)
