"""Where a run's DeepSpeed checkpoints are, for ``resume=``: checked before any compute."""

from __future__ import annotations

from pathlib import Path

from kd_plugin.errors import ConfigError

LATEST = "latest"  # DeepSpeed writes the newest tag into this file


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / LATEST).is_file()


def find_checkpoint_dir(path: str | Path) -> Path:
    """Accept ``<output_dir>/checkpoints`` or ``<output_dir>`` itself."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if has_checkpoint(candidate):
            return candidate
    raise ConfigError("resume", f"no DeepSpeed checkpoint in {str(path)!r} (no '{LATEST}' file there or in "
                      "its checkpoints/ folder)", "<output_dir>/checkpoints of an earlier run, or that <output_dir>")
