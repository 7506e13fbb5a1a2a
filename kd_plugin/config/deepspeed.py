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
        check_ds_json(ds)
        precision, autocast = _precision(ds)
        stage = ds.get("zero_optimization", {}).get("stage", 0)
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
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError("deepspeed_config", f"{path} is not valid JSON ({err})", "a JSON object") from None
    if not isinstance(ds, dict):
        raise ConfigError("deepspeed_config", f"{path} holds a {type(ds).__name__}, not an object", "a JSON object")
    return ds


def check_ds_json(ds: dict[str, Any]) -> None:
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
    _precision(ds)


def _precision(ds: dict[str, Any]) -> tuple[str, bool]:
    """(precision, via torch autocast), refusing more than one mixed-precision mode."""
    modes = []
    if ds.get("bf16", {}).get("enabled"):
        modes.append(("bf16", False))
    if ds.get("fp16", {}).get("enabled"):
        modes.append(("fp16", False))
    autocast = ds.get("torch_autocast", {})
    if autocast.get("enabled"):
        dtype = autocast.get("dtype")
        if dtype not in _AUTOCAST_DTYPES:
            raise ConfigError("deepspeed_config.torch_autocast.dtype", f"{dtype!r}", ", ".join(_AUTOCAST_DTYPES))
        modes.append((_AUTOCAST_DTYPES[dtype], True))
    if len(modes) > 1:
        raise ConfigError("deepspeed_config", f"{len(modes)} mixed-precision modes enabled (bf16 / fp16 / "
                          "torch_autocast)", "at most one of them")
    return modes[0] if modes else ("fp32", False)
