"""Make ``deepspeed.initialize`` work with or without the ``deepspeed`` launcher.

Under the launcher, RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* are set (the local rank also arrives as
``--local_rank=N`` unless ``--no_local_rank`` is used; ``strip_local_rank_argument`` removes it before Sacred
parses the command line). Without the launcher, DeepSpeed 0.19 would try MPI discovery and fail on ``import mpi4py``
(its ``init_distributed`` looks for MPI when RANK/WORLD_SIZE are missing), so a plain
``python experiments/distill.py`` gets a one-process world: rank 0 of 1 (``MASTER_*`` are filled in for tools that read
them, but ``kd_plugin.training.engine.init_distributed`` rendezvouses through a file store, so no port is
taken and two runs on one machine cannot race for one).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from kd_plugin.errors import ConfigError, exit_on_config_error
from kd_plugin.runtime.ports import free_port
from kd_plugin.runtime.tools import prefer_environment_tools


@dataclass(frozen=True)
class LaunchInfo:
    rank: int
    local_rank: int
    world_size: int
    launched: bool  # True when a launcher set the environment

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_FILLED_HERE = False  # this process filled in the one-process world itself (no launcher)


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


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    """An integer launch variable; anything else is one configuration error naming it, not a traceback."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(name, f"the environment variable is {raw!r}", f"an integer >= {minimum} (set by the "
                          "launcher: deepspeed, torchrun; unset it for a one-process run)")
    return value


def launch_info() -> LaunchInfo:
    """Read the launch environment without changing it."""
    return LaunchInfo(
        rank=_env_int("RANK", 0),
        local_rank=_env_int("LOCAL_RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1, minimum=1),
        launched="WORLD_SIZE" in os.environ and "RANK" in os.environ and not _FILLED_HERE,
    )


def ensure_launch_env() -> LaunchInfo:
    """Fill in a single-process world when no launcher did (idempotent); tools from this environment first."""
    global _FILLED_HERE
    prefer_environment_tools()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        _FILLED_HERE = True
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    return launch_info()


def start_experiment_process() -> LaunchInfo:
    """What every experiment script does first, before Sacred is imported and reads the command line: quiet
    Sacred's import-time warning, drop the deepspeed launcher's ``--local_rank=N`` argument (exported as
    ``LOCAL_RANK``), then fill in a one-process world when no launcher did. A launch variable that is no integer
    (``RANK=x``) is one configuration error line, exit 2."""
    import warnings

    # sacred 0.8.7 imports pkg_resources (setuptools < 81 pinned); its deprecation notice is noise in every run
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    sys.argv = strip_local_rank_argument(sys.argv)
    with exit_on_config_error():
        return ensure_launch_env()


# Environment variables that carry a process's node rank, by launcher: torchrun (GROUP_RANK), the deepspeed
# launcher's multi-node runners and Horovod-style ones (NODE_RANK / CROSS_RANK).
NODE_RANK_VARIABLES = ("GROUP_RANK", "NODE_RANK", "CROSS_RANK")


def describe_process(launch: LaunchInfo) -> dict:
    """This process's place in the job, for the run record: rank, local rank, node rank, host."""
    import socket

    node_rank = next((int(os.environ[v]) for v in NODE_RANK_VARIABLES if os.environ.get(v, "").isdigit()), None)
    return {"rank": launch.rank, "local_rank": launch.local_rank, "node_rank": node_rank,
            "host": socket.gethostname(), "launcher": launcher_name()}


def launcher_name() -> str:
    """Which launcher started this process (from the variables each one sets)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    if launch_info().launched:
        return "deepspeed" if "CROSS_RANK" in os.environ or "LOCAL_SIZE" in os.environ else "launcher"
    return "none"


if __name__ == "__main__":  # pragma: no cover - debugging aid
    print(launch_info(), sys.argv)
