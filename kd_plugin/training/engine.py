"""The DeepSpeed engine around the distillation module: optimizer groups, the LR schedule, the batch plan."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kd_plugin.config import BatchPlan, DistillConfig
from kd_plugin.optimization import linear_warmup_decay, parameter_groups
from kd_plugin.training.distillation_module import DistillationModule
from kd_plugin.training.ds_config import build_ds_config
from kd_plugin.training.monitor import monitor_blocks


@dataclass
class Engine:
    engine: Any  # deepspeed.DeepSpeedEngine
    ds_config: dict[str, Any]  # what the engine got (stored in the run's info)

    @property
    def device(self) -> torch.device:
        return torch.device(self.engine.device)

    def summary(self, precision: str, world_size: int, total_steps: int) -> dict[str, Any]:
        optimizer = getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)
        return {
            "train_batch_size": self.engine.train_batch_size(),
            "micro_batch_size": self.engine.train_micro_batch_size_per_gpu(),
            "gradient_accumulation_steps": self.engine.gradient_accumulation_steps(),
            "world_size": world_size,
            "zero_stage": self.engine.zero_optimization_stage(),
            "precision": precision,
            "optimizer": type(optimizer).__name__,
            "total_steps": total_steps,
            "device": str(self.engine.device),
        }


def init_distributed(world_size: int = 1, launched: bool = True) -> None:
    """The process group (gloo on CPU, NCCL on CUDA: DeepSpeed's choice for the accelerator).

    A one-process run that no launcher started meets itself through a file store in a private temporary folder
    instead of a TCP port: a port picked as free can be taken by another run starting at the same moment
    (several runs at once on one machine failed with EADDRINUSE).
    """
    import deepspeed

    backend = None if torch.cuda.is_available() else "gloo"
    if world_size == 1 and not launched:
        store = Path(tempfile.mkdtemp(prefix="kd-pg-")) / "store"
        atexit.register(shutil.rmtree, store.parent, ignore_errors=True)
        deepspeed.init_distributed(dist_backend=backend, init_method=f"file://{store}", rank=0, world_size=1)
    else:
        deepspeed.init_distributed(dist_backend=backend)


def build_engine(module: DistillationModule, config: DistillConfig, plan: BatchPlan, total_steps: int,
                 output_dir: Path) -> Engine:
    import deepspeed

    ds_config = build_ds_config(config.deepspeed, plan, config.optim,
                                monitor_blocks(config.run.monitors, output_dir))
    schedule = linear_warmup_decay(config.optim.schedule_length(total_steps), config.optim.warmup_proportion)
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=parameter_groups(module, config.optim.weight_decay, config.optim.no_decay),
        config=ds_config,
        lr_scheduler=schedule,
    )
    if engine.train_batch_size() != plan.train_batch_size:  # micro x accumulation x world
        raise RuntimeError(f"DeepSpeed train batch {engine.train_batch_size()} != planned "
                           f"{plan.train_batch_size} (micro x accumulation x world size)")
    module.teacher.to(engine.device)  # outside the engine, so it is moved by hand
    return Engine(engine, ds_config)
