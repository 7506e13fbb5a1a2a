"""Command-line tools come from the running interpreter's environment.

DeepSpeed builds its CPU/CUDA ops just in time with torch's ``cpp_extension``, which runs the first ``ninja``
on ``PATH``. The project's virtual environment has its own ninja (1.13, a dependency of deepspeed; its build
log format is v7) and Debian ships another (1.11, log v5). When some processes find one and some the other
(a shell with ``.venv/bin`` on ``PATH`` and one without, the ``deepspeed`` launcher, the test suite), each
ninja discards the other's build log and recompiles every op (40-150 s each on 2 cores): the op cache is
rebuilt again and again. Putting the interpreter's own ``bin/`` first makes every process use one ninja (and
the matching ``deepspeed`` launcher).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def prefer_environment_tools() -> Path:
    """Put the running interpreter's ``bin/`` first on ``PATH`` (idempotent); return that directory."""
    bin_dir = Path(sys.executable).parent
    entries = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    if not entries or entries[0] != str(bin_dir):
        os.environ["PATH"] = os.pathsep.join([str(bin_dir), *[p for p in entries if p != str(bin_dir)]])
    return bin_dir
