"""An output folder holds one run: a folder with an earlier run's results is refused unless this run resumes it.

A second run in the folder of an earlier one (finished, interrupted or crashed) would replace its exported
``student/``, append to its ``metrics.jsonl`` and mix its checkpoints with new ones, while the earlier run's
record still points there (a later ``finetune.py with distill_run_id=<earlier>`` would evaluate the new student
and file the scores under the earlier run). The lock (:mod:`kd_plugin.runtime.output_lock`) keeps two *living*
runs apart; this rule keeps a new run out of a *dead* run's folder. It is checked where the lock is taken, on
rank 0, before any model or data exists.

What counts as an earlier run's results: a DeepSpeed checkpoint (``checkpoints/latest`` or a ``step*`` tag), a
``metrics.jsonl`` or an exported ``student/``. The tokenizer copy a run writes into ``checkpoints/`` at start and
the lock file alone do not count (a run that failed before its first step left nothing to lose). The lock file
names the earlier run (its Sacred id, when it had one, and its start time) for the refusal's message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.checkpoint_format import CHECKPOINTS, LATEST, STEP_DIR

METRICS = "metrics.jsonl"
STUDENT = "student"


def latest_checkpoint(folder: str | Path) -> str | None:
    """The newest checkpoint tag in ``<folder>/checkpoints`` (``latest``, else the last ``step*``), or None."""
    checkpoints = Path(folder) / CHECKPOINTS
    try:
        return (checkpoints / LATEST).read_text().strip() or None
    except OSError:
        tags = sorted(p.name for p in checkpoints.iterdir() if p.is_dir() and STEP_DIR.match(p.name)) \
            if checkpoints.is_dir() else []
        return tags[-1] if tags else None


def earlier_results(folder: str | Path) -> list[str]:
    """What an earlier run left in ``folder`` that a new run would overwrite, in words; [] when nothing."""
    folder = Path(folder)
    held = []
    tag = latest_checkpoint(folder)
    if tag is not None:
        held.append(f"checkpoints up to {tag}")
    metrics = folder / METRICS
    if metrics.is_file():
        try:
            n_lines = sum(1 for line in metrics.read_text(errors="replace").splitlines() if line.strip())
        except OSError:
            n_lines = None
        held.append(METRICS if n_lines is None else f"{METRICS} ({n_lines} log points)")
    student = folder / STUDENT
    if student.is_dir() and any(student.iterdir()):
        held.append(f"an exported {STUDENT}/")
    return held


def describe_run(record: dict[str, Any] | None) -> str:
    """``run 12, started 2026-12-05T05:32:37`` from the lock file's record (what is known of it)."""
    record = record or {}
    parts = []
    if record.get("run_id") is not None:
        parts.append(f"run {record['run_id']}")
    if record.get("since"):
        parts.append(f"started {record['since']}")
    return ", ".join(parts) or "an earlier run"


def resumes_into(resume: str | Path | None, folder: str | Path) -> bool:
    """Whether ``resume`` (a checkpoints folder) lies in ``folder``: the run continues the folder's own run."""
    if resume is None:
        return False
    resume, folder = Path(resume).resolve(), Path(folder).resolve()
    return resume == folder or folder in resume.parents


def check_not_reused(folder: str | Path, resume: str | Path | None = None, record: dict[str, Any] | None = None,
                     key: str = "output_dir") -> None:
    """Refuse ``folder`` when it holds an earlier run's results, unless ``resume`` continues that run."""
    held = earlier_results(folder)
    if not held or resumes_into(resume, folder):
        return
    problem = (f"{str(folder)!r} holds an earlier run ({describe_run(record)}: {', '.join(held)}); a new run "
               "there would overwrite its student and mix its metrics and checkpoints")
    fresh = "a new output_dir (or none: a fresh folder)"
    if latest_checkpoint(folder) is not None:
        allowed = f"{fresh}, or resume={folder} output_dir={folder} to continue that run in its folder"
    else:
        allowed = f"{fresh}; that run has no checkpoint to resume: move the folder away to reuse its name"
    raise ConfigError(key, problem, allowed)


def check_holds_none(folder: str | Path | None, key: str, names: tuple[str, ...] | None, consequence: str,
                     allowed: str) -> None:
    """Refuse ``folder`` when it holds any of ``names`` (None: anything at all), saying what a run there would do
    to them (``consequence``): the rule above for experiments without ``resume`` (finetune, prepare_teacher)."""
    if folder is None or not Path(folder).exists():
        return
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(key, f"{str(folder)!r} is a file, not a folder", allowed)
    found = sorted(p.name for p in folder.iterdir() if names is None or p.name in names)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ConfigError(key, f"{str(folder)!r} already holds {shown}: {consequence}", allowed)
