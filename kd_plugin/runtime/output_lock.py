"""One run per output folder: an exclusive lock on ``<output_dir>/.kd-run.lock``, held for the whole run.

Two runs writing into one folder would interleave their ``metrics.jsonl`` and overwrite each other's
checkpoints and exported student. The lock is an ``fcntl.flock`` on a file inside the folder: the kernel
releases it when the process ends for any reason (exit, exception, ``kill -9``), so a crashed run never
leaves a stale lock behind; the file itself stays and records who held it last (pid, host, start time).
Taking the lock also proves the folder is writable, before any model is loaded.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path

from kd_plugin.errors import ConfigError

LOCK_NAME = ".kd-run.lock"


class OutputDirLock:
    def __init__(self, output_dir: str | Path, key: str = "output_dir"):
        self.output_dir = Path(output_dir)
        self.key = key
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.output_dir / LOCK_NAME

    def acquire(self) -> OutputDirLock:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(self.key, f"{str(self.output_dir)!r} cannot be written ({err.strerror})",
                              "a directory this user can create and write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(self.key, f"another run is writing to {str(self.output_dir)!r} ({holder})",
                              "a different output_dir, or wait for that run to end") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": dt.datetime.now().isoformat(timespec="seconds")}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"


_HELD: dict[Path, OutputDirLock] = {}  # the locks this process holds, until it exits


def hold_output_dir(output_dir: str | Path, key: str = "output_dir") -> OutputDirLock:
    """Lock ``output_dir`` for the rest of this process (idempotent: the config hook and the trainer both ask)."""
    path = Path(output_dir).resolve()
    if path not in _HELD:
        _HELD[path] = OutputDirLock(path, key).acquire()
    return _HELD[path]
