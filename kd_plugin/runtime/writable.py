"""A folder the run will write into, tried before compute: created if missing, then a probe file written and
removed. Permission bits do not tell (root writes anywhere; a read-only mount or a file in the way does not
show in them), so the check is a real write."""

from __future__ import annotations

import os
from pathlib import Path

from kd_plugin.errors import ConfigError


def check_writable_dir(directory: str | Path, key: str) -> Path:
    """``directory``, created if needed; a :class:`ConfigError` on ``key`` if it cannot be created or written."""
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".kd-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        problem = "is a file, not a folder" if directory.is_file() else f"cannot be written ({err.strerror or err})"
        raise ConfigError(key, f"{str(directory)!r} {problem}", "a folder this user can create and write") from None
    return directory
