"""Run ``experiments/distill.py`` in a subprocess, the way users do, against the test database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# What a launcher sets; a test process that imported an experiment in-process may hold them, and a subprocess
# that inherited them would take itself for a launched rank (and several would meet on one MASTER_PORT).
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                    "TORCHELASTIC_RUN_ID")


def experiment_module(script: str, name: str):
    """``experiments/<script>`` imported in-process (its ``ex``, its config scopes). Importing it fills in a
    one-process launch environment (RANK, MASTER_PORT, ...) and may rewrite sys.argv: both are restored, so no
    later test or subprocess inherits them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, PROJECT / "experiments" / script)
    module = importlib.util.module_from_spec(spec)
    argv, environ = list(sys.argv), dict(os.environ)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    return module


def config_defaults(module) -> dict:
    """An experiment's config scopes evaluated (what ``print_config`` shows), without the tracking block."""
    config = {}
    for scope in module.ex.configurations:  # the tracking block, then the experiment's own scope
        config.update(scope())
    config.pop("tracking", None)
    return config


# A configuration whose total loss falls fast: random-initialised student, soft targets + cosine only.
LEARNING_SMOKE = ["smoke", "progress_bar=False", "student.layers=random_init", "alpha_mlm=0", "optim.lr=5e-3"]


def run_env(mongo_url: str | None = None, db_name: str | None = None) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for key in LAUNCH_VARIABLES:
        env.pop(key, None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if mongo_url:
        env["KD_MONGO_URL"] = mongo_url
    if db_name:
        env["KD_MONGO_DB"] = db_name
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_distill(updates: list[str], env: dict[str, str], ranks: int = 1, timeout: int = 600
                ) -> subprocess.CompletedProcess:
    script = str(PROJECT / "experiments" / "distill.py")
    if ranks == 1:
        cmd = [sys.executable, script, "with", *updates]
    else:
        cmd = [str(VENV_BIN / "deepspeed"), "--num_accelerators", str(ranks), "--master_port", str(free_port()),
               "--no_local_rank", script, "with", *updates]
    return subprocess.run(cmd, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=timeout)


def read_metrics(output_dir: Path) -> list[dict[str, float]]:
    with open(output_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
