"""Glue shared by the Sacred experiments (distill, finetune, prepare_teacher): observers on rank 0 only (where
runs are saved: :mod:`kd_plugin.tracking.observers`), bounded captured output, and one-line configuration errors.

Importing it sets Sacred's capture mode to ``"sys"`` for every experiment of the process."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from sacred import SETTINGS, Experiment

from kd_plugin.config.declarations import Block
from kd_plugin.config.sacred_defaults import DeclaredConfig
from kd_plugin.errors import ConfigError
from kd_plugin.runtime.launch import LaunchInfo
from kd_plugin.tracking.captured_logging import run_logger
from kd_plugin.tracking.code_version import code_version
from kd_plugin.tracking.observers import install_tracking
from kd_plugin.tracking.output_budget import filter_captured_output

SETTINGS.CAPTURE_MODE = "sys"  # captures the output of threads too; "fd" would also capture C++ builds' noise


def configure_experiment(ex: Experiment, launch: LaunchInfo) -> None:
    """Call once, right after creating the experiment (before ``run_main``).

    * captured output: progress bars collapsed to their final state and the text bounded (head + tail, about
      1 MB), so no run document can approach MongoDB's 16 MB limit; logging lines included;
    * a ``tracking`` config block (``tracking.mongo_url``, ``tracking.db_name``) and the hooks that give each
      run of rank 0 its observer, by the rule of :func:`kd_plugin.tracking.locations.resolve_database`:
      Sacred's ``-m``, else ``KD_MONGO_URL``, else the config, else the embedded SecantusDB server (started if
      needed), else files (see kd_plugin/tracking/README.md);
    * ``info.code``: the commit the run's code came from and whether tracked files differed from it
      (:mod:`kd_plugin.tracking.code_version`).
    """
    ex.captured_out_filter = filter_captured_output
    ex.logger = run_logger()  # logging lines reach the captured output too (kd_plugin.tracking.captured_logging)
    install_tracking(ex, launch)

    def record_code_version(_run) -> None:
        _run.info["code"] = code_version()

    ex.pre_run_hook(record_code_version)


def set_up_experiment(ex: Experiment, launch: LaunchInfo, blocks: Iterable[Block],
                      per_value: tuple[str, Mapping[Any, Mapping[str, Any]]] | None = None) -> None:
    """What every script (distill, finetune, prepare_teacher) does with its new ``Experiment(name,
    save_git_info=False)``: tracking and captured output (:func:`configure_experiment`; ``info.code`` records the
    commit, so Sacred's own git record, which would also store the remote's URL, is off), and every setting's
    default and ``print_config`` comment from its one declaration (``blocks``, and ``per_value`` defaults:
    :class:`DeclaredConfig`). The script creates the experiment itself: Sacred names the run's main file,
    sources and description after the frame that calls ``Experiment()``."""
    configure_experiment(ex, launch)
    # an entry of ex.configurations is evaluated like a config scope (add_config would wrap it as a plain dict)
    ex.configurations.append(DeclaredConfig(blocks, per_value=per_value))


EXIT_RECORD_LOST = 1  # the run finished, but its record reached neither the database nor the journal


def run_main(ex: Experiment) -> None:
    """``ex.run_commandline()`` with ConfigError turned into a one-line message and exit status 2; a run whose
    record was lost (:attr:`ResilientMongoObserver.record_lost`, said above in full) exits with status 1."""
    try:
        run = ex.run_commandline()
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        sys.exit(2)
    if any(getattr(observer, "record_lost", False) for observer in getattr(run, "observers", ())):
        print("tracking: the run's record was not saved (see above); exit status 1", file=sys.stderr)
        sys.exit(EXIT_RECORD_LOST)
