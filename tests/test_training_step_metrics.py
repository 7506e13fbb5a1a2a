"""The loop's pieces that need no engine: device-side loss accumulation, step callbacks, checkpoint client
state, the launcher's --local_rank argument."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.checkpoint_format import check_compatible
from kd_plugin.runtime.launch import strip_local_rank_argument
from kd_plugin.training import checkpointing
from kd_plugin.training.callbacks import MetricsFile, ProgressLog, ScalarLog, StepReport, default_callbacks
from kd_plugin.training.step_metrics import AccumulationWindow


def test_window_means_equal_a_hand_computation_and_reset_between_steps():
    window = AccumulationWindow()
    micro = [{"loss": torch.tensor(3.0), "loss_ce": torch.tensor(2.0)},
             {"loss": torch.tensor(5.0), "loss_ce": torch.tensor(1.0)},
             {"loss": torch.tensor(1.5), "loss_ce": torch.tensor(0.5)}]
    for losses in micro:
        window.add(losses)
    means, tokens = window.reduce(tokens=123)
    assert means == pytest.approx({"loss": 9.5 / 3, "loss_ce": 3.5 / 3}) and tokens == 123
    window.add({"loss": torch.tensor(7.0), "loss_ce": torch.tensor(4.0)})
    assert window.reduce(tokens=1)[0] == pytest.approx({"loss": 7.0, "loss_ce": 4.0})


def test_window_keeps_sums_on_the_device_until_reduced():
    window = AccumulationWindow()
    loss = torch.tensor(2.0, requires_grad=True) * 3
    window.add({"loss": loss})
    assert isinstance(window.sums, torch.Tensor) and not window.sums.requires_grad  # detached, not a float


def test_metrics_file_and_tracker_get_only_logged_steps(tmp_path):
    logged = []
    callbacks = [MetricsFile(tmp_path), ScalarLog(lambda name, value, step: logged.append((name, value, step)))]
    for step, metrics in [(1, None), (2, {"loss": 1.5, "lr": 1e-3}), (3, None), (4, {"loss": 1.0, "lr": 5e-4})]:
        for callback in callbacks:
            callback.on_step(StepReport(step, 4, metrics))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"loss": 1.5, "lr": 1e-3, "step": 2}, {"loss": 1.0, "lr": 5e-4, "step": 4}]
    assert logged == [("loss", 1.5, 2), ("lr", 1e-3, 2), ("loss", 1.0, 4), ("lr", 5e-4, 4)]


def test_only_rank_0_gets_callbacks(tmp_path):
    assert default_callbacks(tmp_path, False, print, True, 10, 0) == []
    kinds = [type(c).__name__ for c in default_callbacks(tmp_path, True, print, False, 10, 0)]
    assert kinds == ["MetricsFile", "ScalarLog", "ProgressLog"]  # no bar: progress lines instead
    kinds = [type(c).__name__ for c in default_callbacks(tmp_path, True, None, True, 10, 0)]
    assert kinds == ["MetricsFile", "ProgressBar"]


def test_client_state_restores_every_rng_and_refuses_another_plan():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    plan = {"world_size": 1, "micro_batch_size": 8, "seed": 42}
    client = checkpointing.client_state(7, {"epoch": 0, "batches_consumed": 7}, 900, plan)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    checkpointing.restore_rng_state(client["kd_rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert client["kd_step"] == 7 and client["kd_tokens_seen"] == 900 and client["kd_plan"] == plan
    with pytest.raises(ConfigError, match="micro_batch_size=8, this run has micro_batch_size=16"):
        check_compatible(client["kd_plan"], dict(plan, micro_batch_size=16))


@pytest.mark.parametrize("argv", [["distill.py", "--local_rank=3", "with", "smoke"],
                                  ["distill.py", "--local_rank", "3", "with", "smoke"],
                                  ["distill.py", "--local-rank=3", "with", "smoke"]])
def test_the_launchers_local_rank_argument_is_removed_and_exported(argv, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert strip_local_rank_argument(argv) == ["distill.py", "with", "smoke"]
    assert os.environ["LOCAL_RANK"] == "3"


def test_tools_come_from_the_interpreters_environment(monkeypatch):
    """One ninja for every JIT build of DeepSpeed's ops: the environment's, whatever PATH the caller had."""
    import shutil
    import sys
    from pathlib import Path

    from kd_plugin.runtime.tools import prefer_environment_tools

    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    bin_dir = prefer_environment_tools()
    assert bin_dir == Path(sys.executable).parent and os.environ["PATH"].split(os.pathsep)[0] == str(bin_dir)
    prefer_environment_tools()
    assert os.environ["PATH"].split(os.pathsep).count(str(bin_dir)) == 1
    if (bin_dir / "ninja").exists():
        assert shutil.which("ninja") == str(bin_dir / "ninja")


def test_each_environment_builds_deepspeeds_ops_into_its_own_cache(tmp_path):
    """Two environments on one machine must not share torch's op cache (each would rebuild the other's ops):
    a process of this environment that was given no TORCH_EXTENSIONS_DIR builds under <venv>/torch-extensions,
    as torch itself resolves it, and a folder the user chose is kept."""
    import subprocess
    import sys

    from kd_plugin.runtime.tools import environment_extensions_dir

    assert environment_extensions_dir("/envs/a") != environment_extensions_dir("/envs/b")
    probe = ("from kd_plugin.runtime.launch import ensure_launch_env; ensure_launch_env(); "
             "from torch.utils.cpp_extension import _get_build_directory; "
             "print(_get_build_directory('fused_adam', verbose=False))")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    built = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert built.stdout.strip() == str(Path(sys.prefix) / "torch-extensions" / "fused_adam")
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "mine")
    built = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert built.stdout.strip() == str(tmp_path / "mine" / "fused_adam")


def test_without_a_bar_each_log_point_is_one_progress_line_with_the_time_left(caplog):
    clock = iter([100.0, 130.0, 160.0])  # start, then the two log points: 30 s per 2 steps
    progress = ProgressLog(total_steps=10, initial=4, clock=lambda: next(clock))  # resumed at step 4
    with caplog.at_level(logging.INFO, logger="kd_plugin.training.callbacks"):
        for step, metrics in [(5, None), (6, {"loss": 2.5, "lr": 1e-3, "tokens_per_second": 812.4}), (7, None),
                              (8, {"loss": 2.25, "lr": 5e-4, "tokens_per_second": 790.0})]:
            progress.on_step(StepReport(step, 10, metrics))
    # 2 steps in 30 s -> 4 left take 60 s; 4 steps in 60 s -> 2 left take 30 s; lr is not repeated
    assert caplog.messages == [
        "distill step 6/10 (60 %) loss 2.5 tokens_per_second 812.4 | 0:00:30 elapsed, 0:01:00 left",
        "distill step 8/10 (80 %) loss 2.25 tokens_per_second 790 | 0:01:00 elapsed, 0:00:30 left",
    ]
