"""Every logged metric to DeepSpeed's monitors (TensorBoard, CSV, Weights & Biases), beside Sacred.

DeepSpeed's ``tensorboard`` / ``csv_monitor`` / ``wandb`` config blocks make the engine log only its own
numbers (learning rate, loss scale, timers). This callback sends what the trainer logs (each loss term, grad
norm, lr, tokens/s) through the same ``engine.monitor.write_events`` on rank 0, at the same log points as
Sacred, under ``distill/<metric>``. ``monitors=["tensorboard"]`` (the ``tensorboard`` named config) adds the
block with its output under ``<output_dir>/monitor/``; a block written in the DeepSpeed JSON is kept as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_plugin.config.distill import MONITORS  # the DeepSpeed monitor blocks ``monitors`` may enable
from kd_plugin.training.callbacks import StepReport

TAG_PREFIX = "distill/"


def monitor_blocks(monitors: tuple[str, ...], output_dir: Path) -> dict[str, dict[str, Any]]:
    """DeepSpeed config blocks for the requested monitors, writing under ``<output_dir>/monitor``."""
    blocks = {}
    for name in monitors:
        block: dict[str, Any] = {"enabled": True}
        if name in ("tensorboard", "csv_monitor"):
            block.update(output_path=str(output_dir / "monitor"), job_name=name)
        else:  # wandb: project and team come from the JSON or the W&B environment variables
            block.update(project="kd_plugin")
        blocks[name] = block
    return blocks


class DeepSpeedMonitor:
    """Step callback writing each logged metric as ``(distill/<name>, value, step)`` events."""

    def __init__(self, monitor) -> None:
        self.monitor = monitor  # engine.monitor (deepspeed.monitor.monitor.MonitorMaster)

    def on_step(self, report: StepReport) -> None:
        if report.metrics is not None:
            self.monitor.write_events([(TAG_PREFIX + name, float(value), report.step)
                                       for name, value in report.metrics.items()])

    def close(self) -> None:
        pass


def enabled(ds_config: dict[str, Any]) -> bool:
    return any(ds_config.get(name, {}).get("enabled") for name in MONITORS)
