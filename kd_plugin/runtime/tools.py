"""Command-line tools come from the running interpreter's environment.

DeepSpeed builds its CPU/CUDA ops just in time with torch's ``cpp_extension``, which runs the first ``ninja``
on ``PATH``. The project's virtual environment has its own ninja (1.13, a dependency of deepspeed; its build
log format is v7) and Debian ships another (1.11, log v5). When some processes find one and some the other
(a shell with ``.venv/bin`` on ``PATH`` and one without, the ``deepspeed`` launcher, the test suite), each
ninja discards the other's build log and recompiles every op (40-150 s each on 2 cores): the op cache is
rebuilt again and again. Putting the interpreter's own ``bin/`` first makes every process use one ninja (and
the matching ``deepspeed`` launcher).

The built ops are cached per environment too: torch keeps them in ``~/.cache/torch_extensions`` unless
``TORCH_EXTENSIONS_DIR`` says otherwise, and two environments on one machine (a second checkout, a second venv)
write build commands that differ only in include paths, so each rebuilds every op the other built.
``TORCH_EXTENSIONS_DIR`` defaults here to ``<environment>/torch-extensions`` (``sys.prefix``: the venv), before
DeepSpeed builds or loads anything; a value the user set is kept. ``scripts/setup.sh`` builds into the same folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXTENSIONS_ENV = "TORCH_EXTENSIONS_DIR"


def environment_extensions_dir(prefix: str | Path = sys.prefix) -> Path:
    """Where the environment at ``prefix`` keeps DeepSpeed's JIT-built ops."""
    return Path(prefix) / "torch-extensions"


def prefer_environment_tools() -> Path:
    """Put the running interpreter's ``bin/`` first on ``PATH`` and default the op cache to this environment's
    (both idempotent); return that ``bin/`` directory."""
    os.environ.setdefault(EXTENSIONS_ENV, str(environment_extensions_dir()))
    bin_dir = Path(sys.executable).parent
    entries = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    if not entries or entries[0] != str(bin_dir):
        os.environ["PATH"] = os.pathsep.join([str(bin_dir), *[p for p in entries if p != str(bin_dir)]])
    return bin_dir
