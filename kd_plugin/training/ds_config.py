"""Build the config the DeepSpeed engine gets: the JSON file's own settings plus what the experiment owns.

One source of truth: batch sizes, accumulation, clipping and optimizer hyper-parameters come from the
experiment config (``batch.*``, ``optim.*``) and are written here; the file itself was read and checked once
(:class:`kd_plugin.config.DeepSpeedSettings`). The LR schedule is not a DeepSpeed "scheduler" block: see
:mod:`kd_plugin.optimization`.

The same config is checked in the experiment's config hook, before any model exists
(:func:`check_with_deepspeed`): by DeepSpeed's own config classes (they need no engine and no process group),
then what ``deepspeed.initialize`` would only find later (optimizer arguments, monitor packages). A refused
value is ``deepspeed_config.<json path>: <value> (in <file>); allowed: ...``, not a pydantic traceback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from kd_plugin.config import BatchPlan, DeepSpeedSettings, DistillConfig, OptimSettings
from kd_plugin.errors import ConfigError
from kd_plugin.training.monitor import monitor_blocks

DOCS = "https://www.deepspeed.ai/docs/config-json/"
# DeepSpeed's monitor blocks and the package each one imports when the engine starts
MONITOR_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet": "comet_ml", "csv_monitor": None}


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
    # DeepSpeed's ThroughputTimer synchronises the device at every forward and every engine.step() (2 waits per
    # micro-batch on a GPU); the trainer measures its own throughput at log points, so the timer is off unless
    # the JSON asks for it.
    ds.setdefault("timers", {"throughput": {"enabled": False}})
    return ds


def check_with_deepspeed(config: DistillConfig, plan: BatchPlan) -> None:
    """Before any model exists: the config the engine will get, read by DeepSpeed's own config classes (its
    pydantic models for ZeRO, precision, monitors, ...), and the packages of the monitors it enables.

    Without a process group DeepSpeed's config assumes one process, so the train batch it checks here is the
    per-process one (micro x accumulation); the full one is this project's own arithmetic (:class:`BatchPlan`).
    """
    from deepspeed.runtime.config import DeepSpeedConfig, DeepSpeedConfigError
    from pydantic import ValidationError

    path = config.deepspeed.path
    ds = build_ds_config(config.deepspeed, plan, config.optim,
                         monitor_blocks(config.run.monitors, config.run.output_dir or Path("outputs")))
    ds["train_batch_size"] = plan.micro_batch_size * plan.gradient_accumulation_steps
    try:
        DeepSpeedConfig(ds)
    except ValidationError as err:
        raise _validation_error(err, ds, path) from None
    except (DeepSpeedConfigError, TypeError, ValueError, KeyError, AttributeError, AssertionError) as err:
        raise ConfigError("deepspeed_config", f"DeepSpeed cannot read {path}: {type(err).__name__}: {err}",
                          f"the keys and values of DeepSpeed's config ({DOCS})") from None
    check_optimizer_params(ds, path)
    check_monitor_packages(ds, config.run.monitors, path)


# what DeepSpeed's Adam set-up takes out of optimizer.params before calling the optimizer class
ADAM_SETUP_PARAMS = ("torch_adam", "adam_w_mode", "fp32_optimizer_states")


def check_optimizer_params(ds: dict[str, Any], path: Path) -> None:
    """Every ``optimizer.params`` key is an argument of the Adam class DeepSpeed will build (torch's with
    ``torch_adam``, DeepSpeedCPUAdam with an offloaded optimizer, else FusedAdam): an unknown one would stop the
    run inside ``deepspeed.initialize``, after the models and data were built."""
    import inspect

    import torch

    optimizer = ds["optimizer"]
    params = optimizer.get("params", {})
    offload = ((ds.get("zero_optimization") or {}).get("offload_optimizer") or {}).get("device", "none")
    if params.get("torch_adam"):
        adamw = optimizer["type"] == "AdamW" or params.get("adam_w_mode", True)
        cls, extra = (torch.optim.AdamW if adamw else torch.optim.Adam), ("foreach",)
    elif offload in ("cpu", "nvme"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam as cls
        extra = ()
    else:
        from deepspeed.ops.adam import FusedAdam as cls
        extra = ()
    accepted = {*inspect.signature(cls.__init__).parameters, *ADAM_SETUP_PARAMS, *extra} - {"self", "params",
                                                                                          "model_params"}
    for key in params:
        if key not in accepted:
            raise ConfigError(f"deepspeed_config.optimizer.params.{key}", f"not a parameter of {cls.__name__} "
                              f"(in {path})", ", ".join(sorted(accepted - {"lr", "betas", "eps", "weight_decay"})))


def _validation_error(err, ds: dict[str, Any], path: Path) -> ConfigError:
    """The first error of a DeepSpeed config model as ``deepspeed_config.<json path>``: the block is the one
    where the error's location holds the refused value (pydantic names the model, not the JSON key)."""
    item = err.errors()[0]
    loc = [str(part) for part in item["loc"]]
    blocks = [key for key, block in ds.items() if isinstance(block, dict) and _holds(block, loc, item["input"])]
    json_path = ".".join([*blocks[:1], *loc])
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        fields = _model_fields(err.title) if len(loc) == 1 else None
        return ConfigError(f"deepspeed_config.{json_path}", f"unknown key (in {path})",
                           ", ".join(fields) if fields else f"the keys of DeepSpeed's {err.title} ({DOCS})")
    allowed = message.removeprefix("Input should be ") if message.startswith("Input should be") else None
    problem = f"{item['input']!r} (in {path})" if allowed else f"{item['input']!r}: {message} (in {path})"
    return ConfigError(f"deepspeed_config.{json_path}", problem, allowed or f"what DeepSpeed's {err.title} accepts ({DOCS})")


def _holds(block: dict[str, Any], loc: list[str], value: Any) -> bool:
    for part in loc:
        if not isinstance(block, dict) or part not in block:
            return False
        block = block[part]
    return block == value or block is value


def _model_fields(title: str) -> list[str] | None:
    """The keys of the DeepSpeed config model called ``title`` (its JSON names: aliases where they have one)."""
    from deepspeed.runtime.config_utils import DeepSpeedConfigModel

    stack = list(DeepSpeedConfigModel.__subclasses__())
    while stack:
        model = stack.pop()
        if model.__name__ == title:
            return sorted(field.alias or name for name, field in model.model_fields.items()
                          if not (field.json_schema_extra or {}).get("deprecated"))
        stack.extend(model.__subclasses__())
    return None


def check_monitor_packages(ds: dict[str, Any], requested: tuple[str, ...] = (), path: Path | None = None) -> None:
    """Every monitor the engine will start has its package installed (DeepSpeed imports it only then)."""
    for name, package in MONITOR_PACKAGES.items():
        block = ds.get(name)
        if not (isinstance(block, dict) and block.get("enabled")) or package is None:
            continue
        if importlib.util.find_spec(package) is None:
            key, where = ("monitors", "") if name in requested else (f"deepspeed_config.{name}.enabled", f" (in {path})")
            raise ConfigError(key, f"the {name} monitor needs the Python package {package!r}, which is not "
                              f"installed{where}",
                              f"`pip install {package}` into this environment, or a monitor without it "
                              "(csv_monitor needs nothing)")
