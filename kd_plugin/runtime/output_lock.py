"""One run per output folder: an exclusive lock on ``<output_dir>/.kd-run.lock``, held for the whole run.

Two runs writing into one folder would interleave their ``metrics.jsonl`` and overwrite each other's
checkpoints and exported student. The lock is an ``fcntl.flock`` on a file inside the folder: the kernel
releases it when the process ends for any reason (exit, exception, ``kill -9``), so a crashed run never
leaves a stale lock behind; the file itself stays and records who held it last (pid, host, start time).
Taking the lock also proves the folder is writable, before any model is loaded.

Whoever takes the lock also checks that the folder holds no earlier run's results
(:mod:`kd_plugin.runtime.run_folder`) before it writes its own record over the earlier holder's, so the refusal
can name that run; the trainer adds its run id to the record once the tracker has given it one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.run_folder import check_not_reused

LOCK_NAME = ".kd-run.lock"


class OutputDirLock:
    def __init__(self, output_dir: str | Path, key: str = "output_dir"):
        self.output_dir = Path(output_dir)
        self.key = key
        self._fd: int | None = None
        self.previous: dict[str, Any] = {}  # the record the last holder left (pid, host, since, run_id)
        self.holder: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        return self.output_dir / LOCK_NAME

    def acquire(self, check: Callable[[dict[str, Any]], None] | None = None) -> OutputDirLock:
        """Take the lock; ``check(previous record)`` may refuse the folder before this process's record
        replaces the earlier holder's (the lock is then released and the file left as it was)."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
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
        self.previous = _read_record(fd)
        if check is not None:
            try:
                check(self.previous)
            except BaseException:
                if created:  # a refused folder keeps what it held, and no lock file of ours
                    self.path.unlink(missing_ok=True)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise
        self._fd = fd
        self.record(pid=os.getpid(), host=socket.gethostname(), since=dt.datetime.now().isoformat(timespec="seconds"))
        return self

    def record(self, **fields: Any) -> OutputDirLock:
        """Add ``fields`` (e.g. ``run_id``) to this holder's record in the lock file."""
        if self._fd is not None:
            self.holder.update({k: v for k, v in fields.items() if v is not None})
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(self.holder, default=str).encode(), 0)
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


def _read_record(fd: int) -> dict[str, Any]:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _read_holder(fd: int) -> str:
    holder = _read_record(fd)
    try:
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except KeyError:
        return "holder unknown"


_HELD: dict[Path, OutputDirLock] = {}  # the locks this process holds, until it exits


def hold_output_dir(output_dir: str | Path, key: str = "output_dir", resume: str | Path | None = None
                    ) -> OutputDirLock:
    """Lock ``output_dir`` for the rest of this process (idempotent: the config hook and the trainer both ask),
    refusing a folder that holds an earlier run's results unless ``resume`` continues that run from it."""
    path = Path(output_dir).resolve()
    if path not in _HELD:
        _HELD[path] = OutputDirLock(path, key).acquire(
            lambda previous: check_not_reused(output_dir, resume, previous, key))
    return _HELD[path]
