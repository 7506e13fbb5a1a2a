"""Typed, validated experiment configs: parsed once at the Sacred boundary, read as attributes everywhere else."""

from kd_plugin.config.batch import BatchPlan, BatchSettings
from kd_plugin.config.deepspeed import DeepSpeedSettings
from kd_plugin.config.distill import (
    ALPHA_KEYS,
    DISTILL_BLOCKS,
    DataSettings,
    DistillConfig,
    PerformanceSettings,
    RunSettings,
    StudentSettings,
    declarable_loss_config,
    distill_bookkeeping_keys,
    distill_defaults,
    distill_docs,
    mixture_declaration,
)
from kd_plugin.config.optim import OptimSettings

__all__ = [
    "ALPHA_KEYS",
    "DISTILL_BLOCKS",
    "BatchPlan",
    "BatchSettings",
    "DataSettings",
    "DeepSpeedSettings",
    "DistillConfig",
    "OptimSettings",
    "PerformanceSettings",
    "RunSettings",
    "StudentSettings",
    "declarable_loss_config",
    "distill_bookkeeping_keys",
    "distill_defaults",
    "distill_docs",
    "mixture_declaration",
]
