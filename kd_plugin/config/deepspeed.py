"""The DeepSpeed JSON file: read once, checked once, with what it decides (precision, ZeRO stage) named.

Each file in ``ds_configs/`` holds only DeepSpeed's own business (ZeRO stage, offload, precision, optimizer
type, monitors). What the experiment config owns (batch sizes, accumulation, clipping, optimizer
hyper-parameters, the LR schedule) is written into it at start by ``kd_plugin.training.ds_config``; a file
that also sets them is refused, as are keys DeepSpeed 0.19.7 removed (they would otherwise raise a bare
``DeepSpeedConfigError`` deep inside start-up).

Precision: ``bf16.enabled`` (DeepSpeed's bf16 weights + fp32 master copy), ``fp16.enabled``, or
``torch_autocast`` (fp32 weights and optimizer, forward passes under ``torch.autocast``; ``ds_configs/bf16.json``
uses it, see ``ds_configs/README.md`` for why). The frozen teacher runs in the chosen 16-bit type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kd_plugin import validation as values
from kd_plugin.errors import ConfigError
from kd_plugin.runtime.paths import DS_CONFIGS

# DeepSpeed 0.19.7+ removed these; say what to use instead.
REMOVED_KEYS = {
    "compression_training": "DeepSpeed's compression/layer reduction was removed in 0.19.7; choose student "
    "layers with `student.layers` (kd_plugin's own layer selection)",
    "amp": "apex AMP was removed in 0.19.7; use `\"torch_autocast\"` or `\"bf16\"` (ds_configs/bf16.json)",
    "progressive_layer_drop": "progressive layer drop was removed in 0.19.7; remove the key",
    "sparse_attention": "sparse attention was removed in 0.19.7; remove the key",
}
REMOVED_OPTIMIZERS = {"onebitadam", "onebitlamb", "zerooneadam"}
SACRED_OWNED_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "scheduler",
)
SUPPORTED_OPTIMIZERS = ("Adam", "AdamW")
# DeepSpeed's top-level scalars that no DeepSpeed config model checks (deepspeed.runtime.config get_scalar_param)
SCALARS = {"steps_per_print": int, "wall_clock_breakdown": bool, "memory_breakdown": bool, "dump_state": bool,
           "prescale_gradients": bool, "gradient_predivide_factor": float, "sparse_gradients": bool,
           "zero_allow_untested_optimizer": bool, "zero_force_ds_cpu_optimizer": bool, "disable_allgather": bool,
           "dataloader_drop_last": bool}
# DeepSpeed's top-level keys whose value is an object (``ds[key].get(...)`` in DeepSpeed and here)
BLOCKS = ("optimizer", "zero_optimization", "bf16", "fp16", "torch_autocast", "tensorboard", "csv_monitor", "wandb",
          "comet", "activation_checkpointing", "flops_profiler", "comms_logger", "checkpoint", "data_types", "aio",
          "compile", "timers", "tensor_parallel", "data_efficiency", "elasticity", "autotuning", "pipeline")
_AUTOCAST_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "torch.bfloat16": "bf16",
                    "float16": "fp16", "fp16": "fp16", "half": "fp16", "torch.float16": "fp16"}


@dataclass(frozen=True)
class DeepSpeedSettings:
    """``deepspeed_config``: the file, its checked content, and what it decides."""

    path: Path
    json: MappingProxyType  # the file's settings (read-only view)
    precision: str  # fp32 | bf16 | fp16: the 16-bit type of the forward passes (and of the frozen teacher)
    zero_stage: int
    autocast: bool  # True: fp32 weights, forward under torch.autocast (``torch_autocast`` block)

    @classmethod
    def from_path(cls, path: str | Path) -> DeepSpeedSettings:
        ds = load_ds_json(path)
        try:
            check_ds_json(ds)
        except ConfigError as err:  # the same refusal, naming the file it is in
            raise ConfigError(err.key, f"{err.problem} (in {path})", err.allowed) from None
        precision, autocast = _precision(ds)
        stage = _block(ds, "zero_optimization").get("stage", 0)
        return cls(Path(path), MappingProxyType(ds), precision, stage, autocast)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dict(self.json)))  # a deep, mutable copy


def load_ds_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in DS_CONFIGS.glob("*.json"))
        raise ConfigError("deepspeed_config", f"no such file {str(path)!r}",
                          f"a JSON file, e.g. ds_configs/{{{', '.join(shipped)}}}")
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("deepspeed_config", f"{path} is not valid JSON ({err})", "a JSON object") from None
    except OSError as err:
        raise ConfigError("deepspeed_config", f"{path} cannot be read ({err.strerror or err})",
                          "a readable JSON file") from None
    if not isinstance(ds, dict):
        raise ConfigError("deepspeed_config", f"{path} holds a {type(ds).__name__}, not an object", "a JSON object")
    return ds


def _block(ds: dict[str, Any], key: str) -> dict[str, Any]:
    """``ds[key]`` as a JSON object (``{}`` when absent): ``"bf16": true`` would otherwise fail deep in start-up."""
    value = ds.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"deepspeed_config.{key}", f"{value!r} is not a JSON object", f'an object, e.g. "{key}": {{...}}')
    return value


def _enabled(ds: dict[str, Any], key: str) -> bool:
    """``ds[key].enabled`` as a JSON boolean: DeepSpeed would read ``"yes"`` (or ``"no"``!) as true."""
    value = _block(ds, key).get("enabled", False)
    if not isinstance(value, bool):
        raise ConfigError(f"deepspeed_config.{key}.enabled", f"{value!r} is not a boolean", "true or false")
    return value


def _check_scalars(ds: dict[str, Any]) -> None:
    """DeepSpeed reads these top-level values as they are (no config model): ``"steps_per_print": "often"`` would
    fail at the first optimizer step."""
    for key, kind in SCALARS.items():
        if key not in ds:
            continue
        if kind is bool:
            values.flag(ds[key], f"deepspeed_config.{key}")
        elif kind is int:
            values.integer(ds[key], f"deepspeed_config.{key}", allow_none=True)
        else:
            values.number(ds[key], f"deepspeed_config.{key}", 0.0, low_open=True)


def check_ds_json(ds: dict[str, Any]) -> None:
    """What this project decides from the file: removed keys, keys the experiment config owns, the optimizer,
    the ZeRO stage and the precision. Every other value is DeepSpeed's and is checked by DeepSpeed's own config
    models before the engine exists (:func:`kd_plugin.training.ds_config.check_with_deepspeed`)."""
    for key in BLOCKS:
        if key in ds:
            _block(ds, key)
    _check_scalars(ds)
    for key, advice in REMOVED_KEYS.items():
        if key in ds:
            raise ConfigError(f"deepspeed_config.{key}", f"key removed in DeepSpeed 0.19.7: {advice}",
                              "current DeepSpeed keys")
    for key in SACRED_OWNED_KEYS:
        if key in ds:
            raise ConfigError(
                f"deepspeed_config.{key}",
                "set by the experiment config (one source of truth), not by the DeepSpeed JSON",
                "remove it from the JSON and use batch.* / optim.* in the experiment config",
            )
    optimizer = ds.get("optimizer", {"type": "AdamW"})
    if str(optimizer.get("type", "")).lower() in REMOVED_OPTIMIZERS:
        raise ConfigError("deepspeed_config.optimizer.type", f"{optimizer['type']} was removed in DeepSpeed 0.19.7",
                          str(SUPPORTED_OPTIMIZERS))
    if optimizer.get("type") not in SUPPORTED_OPTIMIZERS:
        raise ConfigError("deepspeed_config.optimizer.type", f"unsupported optimizer {optimizer.get('type')!r}",
                          str(SUPPORTED_OPTIMIZERS))
    params = optimizer.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError("deepspeed_config.optimizer.params", f"{params!r} is not a JSON object",
                          'an object, e.g. "params": {"torch_adam": true}')
    owned = sorted(set(params) & {"lr", "betas", "eps", "weight_decay"})
    if owned:
        raise ConfigError(
            f"deepspeed_config.optimizer.params.{owned[0]}", "set by the experiment config, not the DeepSpeed JSON",
            "optim.* keys (other optimizer params such as torch_adam stay in the JSON)",
        )
    stage = _block(ds, "zero_optimization").get("stage", 0)
    if isinstance(stage, bool) or stage not in (1, 2, 3):
        raise ConfigError("deepspeed_config.zero_optimization.stage", f"stage {stage!r}",
                          "1, 2 or 3 (the student is exported from the ZeRO checkpoint's fp32 master weights)")
    _precision(ds)


def _precision(ds: dict[str, Any]) -> tuple[str, bool]:
    """(precision, via torch autocast), refusing more than one mixed-precision mode."""
    modes = []
    if _enabled(ds, "bf16"):
        modes.append(("bf16", False))
    if _enabled(ds, "fp16"):
        modes.append(("fp16", False))
    autocast = _block(ds, "torch_autocast")
    if _enabled(ds, "torch_autocast"):
        dtype = autocast.get("dtype")
        if dtype not in _AUTOCAST_DTYPES:
            raise ConfigError("deepspeed_config.torch_autocast.dtype", f"{dtype!r}", ", ".join(_AUTOCAST_DTYPES))
        modes.append((_AUTOCAST_DTYPES[dtype], True))
    if len(modes) > 1:
        raise ConfigError("deepspeed_config", f"{len(modes)} mixed-precision modes enabled (bf16 / fp16 / "
                          "torch_autocast)", "at most one of them")
    return modes[0] if modes else ("fp32", False)
