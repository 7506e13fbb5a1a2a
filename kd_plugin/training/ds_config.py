"""Build the DeepSpeed config the engine gets: the JSON file's own settings plus what Sacred owns.

One source of truth: batch sizes, accumulation, clipping, optimizer hyper-parameters and the LR schedule come
from the experiment config and are written here; a JSON file that also sets them is rejected, as are keys that
DeepSpeed 0.19.7 removed (they would otherwise raise a bare ``DeepSpeedConfigError`` deep inside start-up).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_plugin.errors import ConfigError

# DeepSpeed 0.19.7+ removed these; say what to use instead.
REMOVED_KEYS = {
    "compression_training": "DeepSpeed's compression/layer reduction was removed in 0.19.7; choose student "
    "layers with `student.layers` (kd_plugin's own layer selection)",
    "amp": "apex AMP was removed in 0.19.7; use `\"bf16\": {\"enabled\": true}` (ds_configs/bf16.json) or fp16",
    "progressive_layer_drop": "progressive layer drop was removed in 0.19.7; remove the key",
    "sparse_attention": "sparse attention was removed in 0.19.7; remove the key",
}
REMOVED_OPTIMIZERS = {"onebitadam", "onebitlamb", "zerooneadam"}
logger = logging.getLogger(__name__)

SACRED_OWNED_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "scheduler",
)
SUPPORTED_OPTIMIZERS = ("Adam", "AdamW")


@dataclass(frozen=True)
class BatchPlan:
    """train batch = micro-batch x accumulation x world size (DeepSpeed checks the same identity)."""

    micro_batch_size: int
    gradient_accumulation_steps: int
    world_size: int

    @property
    def train_batch_size(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.world_size


def plan_batches(
    micro_batch_size: int, gradient_accumulation_steps: int | None, effective_batch_size: int | None, world_size: int
) -> BatchPlan:
    """Accumulation from an explicit value or from a target effective batch (e.g. 4096 sequences)."""
    if not isinstance(micro_batch_size, int) or micro_batch_size < 1:
        raise ConfigError("batch.micro_batch_size", f"{micro_batch_size!r} is not a positive integer", ">= 1")
    if effective_batch_size is not None:
        if not isinstance(effective_batch_size, int) or effective_batch_size < micro_batch_size * world_size:
            raise ConfigError(
                "batch.effective_batch_size",
                f"{effective_batch_size!r} is smaller than micro_batch_size x world_size = {micro_batch_size * world_size}",
                f"an integer >= {micro_batch_size * world_size}, or null to use gradient_accumulation_steps",
            )
        accumulation = math.ceil(effective_batch_size / (micro_batch_size * world_size))
        if gradient_accumulation_steps not in (None, accumulation):
            raise ConfigError(
                "batch.gradient_accumulation_steps",
                f"{gradient_accumulation_steps} conflicts with effective_batch_size={effective_batch_size} "
                f"(which needs {accumulation})",
                "set only one of the two (the other null)",
            )
        plan = BatchPlan(micro_batch_size, accumulation, world_size)
        if plan.train_batch_size != effective_batch_size:
            logger.warning("effective_batch_size=%d is not a multiple of micro_batch_size x world_size = %d: "
                           "using %d sequences per optimizer step", effective_batch_size,
                           micro_batch_size * world_size, plan.train_batch_size)
        return plan
    accumulation = 1 if gradient_accumulation_steps is None else gradient_accumulation_steps
    if not isinstance(accumulation, int) or accumulation < 1:
        raise ConfigError("batch.gradient_accumulation_steps", f"{accumulation!r} is not a positive integer", ">= 1")
    return BatchPlan(micro_batch_size, accumulation, world_size)


def load_ds_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "ds_configs").glob("*.json"))
        raise ConfigError("deepspeed_config", f"no such file {str(path)!r}", f"a JSON file, e.g. ds_configs/{{{', '.join(shipped)}}}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError("deepspeed_config", f"{path} is not valid JSON ({err})", "a JSON object") from None


def check_ds_json(ds: dict[str, Any]) -> None:
    for key, advice in REMOVED_KEYS.items():
        if key in ds:
            raise ConfigError(f"deepspeed_config.{key}", f"key removed in DeepSpeed 0.19.7: {advice}", "current DeepSpeed keys")
    for key in SACRED_OWNED_KEYS:
        if key in ds:
            raise ConfigError(
                f"deepspeed_config.{key}",
                "set by the experiment config (one source of truth), not by the DeepSpeed JSON",
                "remove it from the JSON and use batch.* / optim.* in the experiment config",
            )
    optimizer = ds.get("optimizer", {"type": "AdamW"})
    if optimizer.get("type", "").lower() in REMOVED_OPTIMIZERS:
        raise ConfigError("deepspeed_config.optimizer.type", f"{optimizer['type']} was removed in DeepSpeed 0.19.7", str(SUPPORTED_OPTIMIZERS))
    if optimizer.get("type") not in SUPPORTED_OPTIMIZERS:
        raise ConfigError("deepspeed_config.optimizer.type", f"unsupported optimizer {optimizer.get('type')!r}", str(SUPPORTED_OPTIMIZERS))
    owned = sorted(set(optimizer.get("params", {})) & {"lr", "betas", "eps", "weight_decay"})
    if owned:
        raise ConfigError(
            f"deepspeed_config.optimizer.params.{owned[0]}", "set by the experiment config, not the DeepSpeed JSON",
            "optim.* keys (other optimizer params such as torch_adam stay in the JSON)",
        )
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (1, 2, 3):
        raise ConfigError("deepspeed_config.zero_optimization.stage", f"stage {stage!r}",
                          "1, 2 or 3 (the student is exported from the ZeRO checkpoint's fp32 master weights)")
    if ds.get("bf16", {}).get("enabled") and ds.get("fp16", {}).get("enabled"):
        raise ConfigError("deepspeed_config", "bf16 and fp16 both enabled", "at most one of them")


def build_ds_config(ds_json: dict[str, Any], plan: BatchPlan, optim: dict[str, Any]) -> dict[str, Any]:
    """The full config handed to ``deepspeed.initialize``."""
    check_ds_json(ds_json)
    ds = copy.deepcopy(ds_json)
    ds.setdefault("optimizer", {"type": "AdamW"})
    ds["optimizer"]["params"] = dict(
        ds["optimizer"].get("params", {}),
        lr=optim["lr"],
        betas=list(optim["betas"]),
        eps=optim["eps"],
        weight_decay=optim["weight_decay"],
    )
    # The LR schedule is not a DeepSpeed "scheduler" block: see kd_plugin/training/optimization.py.
    ds["gradient_clipping"] = optim["max_grad_norm"]
    ds["train_micro_batch_size_per_gpu"] = plan.micro_batch_size
    ds["gradient_accumulation_steps"] = plan.gradient_accumulation_steps
    ds["train_batch_size"] = plan.train_batch_size
    return ds


def precision_of(ds: dict[str, Any]) -> str:
    if ds.get("bf16", {}).get("enabled"):
        return "bf16"
    if ds.get("fp16", {}).get("enabled"):
        return "fp16"
    return "fp32"
