"""Build the config the DeepSpeed engine gets: the JSON file's own settings plus what the experiment owns.

One source of truth: batch sizes, accumulation, clipping and optimizer hyper-parameters come from the
experiment config (``batch.*``, ``optim.*``) and are written here; the file itself was read and checked once
(:class:`kd_plugin.config.DeepSpeedSettings`). The LR schedule is not a DeepSpeed "scheduler" block: see
:mod:`kd_plugin.optimization`.
"""

from __future__ import annotations

from typing import Any

from kd_plugin.config import BatchPlan, DeepSpeedSettings, OptimSettings


def build_ds_config(settings: DeepSpeedSettings, plan: BatchPlan, optim: OptimSettings,
                    monitors: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The full config handed to ``deepspeed.initialize``; ``monitors`` adds monitor blocks the JSON lacks."""
    ds = settings.as_dict()
    for name, block in (monitors or {}).items():
        ds.setdefault(name, block)
    ds.setdefault("optimizer", {"type": "AdamW"})
    ds["optimizer"]["params"] = dict(
        ds["optimizer"].get("params", {}),
        lr=optim.lr,
        betas=list(optim.betas),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    ds["gradient_clipping"] = optim.max_grad_norm
    ds["train_micro_batch_size_per_gpu"] = plan.micro_batch_size
    ds["gradient_accumulation_steps"] = plan.gradient_accumulation_steps
    ds["train_batch_size"] = plan.train_batch_size
    return ds
