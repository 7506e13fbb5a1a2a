"""Glue shared by the Sacred experiments (distill, finetune, prepare_teacher): rank-aware observers, bounded
captured output, and a clean one-line message for configuration errors."""

from __future__ import annotations

import sys

from sacred import SETTINGS, Experiment
from sacred.utils import apply_backspaces_and_linefeeds

from kd_plugin.errors import ConfigError
from kd_plugin.training.launch_env import LaunchInfo

SETTINGS.CAPTURE_MODE = "sys"  # captures the output of threads too; "fd" would also capture C++ builds' noise


def configure_experiment(ex: Experiment, launch: LaunchInfo) -> None:
    # Progress bars rewrite one line many times: keep only the final state of each line.
    ex.captured_out_filter = apply_backspaces_and_linefeeds


def run_main(ex: Experiment) -> None:
    """``ex.run_commandline()`` with ConfigError turned into a one-line message and exit status 2."""
    try:
        ex.run_commandline()
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        sys.exit(2)
