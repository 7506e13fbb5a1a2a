"""The typed distillation config: parsed once from Sacred's dict, every bad value named by the user's key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kd_plugin.config import DistillConfig
from kd_plugin.config.deepspeed import DeepSpeedSettings
from kd_plugin.errors import ConfigError
from tests.distill_runner import config_defaults, experiment_module

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def defaults() -> dict:
    """experiments/distill.py's config scope, evaluated (what `print_config` shows)."""
    return config_defaults(experiment_module("distill.py", "distill_for_config_tests"))


def with_update(defaults: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(defaults)
    *path, last = dotted.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[last] = value
    return cfg


def test_the_defaults_parse_into_typed_blocks(defaults):
    config = DistillConfig.from_dict(defaults)
    assert config.loss.weights == {"ce": 5.0, "mlm": 2.0, "clm": 0.0, "cos": 1.0, "mse": 0.0, **defaults["loss_weights"]}
    assert config.loss.active == {"ce": 5.0, "mlm": 2.0, "cos": 1.0} and config.loss.temperature == 2.0
    assert config.batch.plan(world_size=2).train_batch_size == 32
    assert config.deepspeed.zero_stage == 2 and config.deepspeed.precision == "fp32"
    assert config.masking.smoothing == 0.7 and config.optim.betas == (0.9, 0.98)
    assert config.performance.attn_implementation == "auto" and config.run.max_steps == 150


@pytest.mark.parametrize("key, value", [
    ("T", "x"), ("alpha_ce", "five"), ("masking.mlm_probability", "x"), ("masking.smoothing", None),
    ("data.max_seq_length", 12.5), ("data.held_out_fraction", "0.1"), ("batch.micro_batch_size", True),
    ("optim.lr", "1e-3"), ("optim.eps", -1.0), ("max_steps", "150"), ("log_every", 0), ("seed", -1),
    ("performance.compile", "yes"), ("performance.logit_chunk_rows", 0), ("student.dropout", 1.5),
    ("student.fold_token_type_embedding", 1), ("masking.random_tokens", "all"), ("optim.schedule_extra_step", 2),
    ("performance.logit_chunk_rows", "big"), ("data.num_proc", 0), ("data.num_proc", "all"),
])
def test_a_value_of_the_wrong_type_or_range_names_its_key(defaults, key, value):
    with pytest.raises(ConfigError) as err:
        DistillConfig.from_dict(with_update(defaults, key, value))
    assert err.value.key.startswith(key) and err.value.allowed


@pytest.mark.parametrize("updates, key", [
    ({"alpha_ce": -1}, "alpha_ce"),
    ({"alpha_ce": 0, "alpha_mlm": 0, "alpha_cos": 0}, "alpha_* / loss_weights"),
    ({"masking.mlm_probability": 1.5}, "masking.mlm_probability"),
    ({"batch.micro_batch_size": 0}, "batch.micro_batch_size"),
    ({"optim.lr": 0}, "optim.lr"),
    ({"performance.prefetch_batches": -1}, "performance.prefetch_batches"),
    ({"optim.no_decay": "none"}, "optim.no_decay"),
    ({"data.num_proc": 0}, "data.num_proc"),
])
def test_a_bad_value_is_refused_under_the_key_the_user_typed(defaults, updates, key):
    cfg = defaults
    for dotted, value in updates.items():
        cfg = with_update(cfg, dotted, value)
    with pytest.raises(ConfigError) as err:
        DistillConfig.from_dict(cfg)
    assert err.value.key == key and err.value.allowed
    assert str(err.value).startswith(f"{key}: ")  # what `configuration error: ` is followed by on the command line


@pytest.mark.parametrize("block", ["data", "batch", "optim", "masking", "performance", "student"])
def test_an_unknown_key_in_a_block_is_refused(defaults, block):
    with pytest.raises(ConfigError) as err:
        DistillConfig.from_dict(with_update(defaults, f"{block}.no_such_setting", 1))
    assert err.value.key == f"{block}.no_such_setting" and err.value.problem == "unknown key"


def test_a_resume_without_checkpoint_is_refused(defaults, tmp_path):
    with pytest.raises(ConfigError) as err:
        DistillConfig.from_dict(dict(defaults, resume=str(tmp_path)))
    assert err.value.key == "resume"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step00000005")
    assert DistillConfig.from_dict(dict(defaults, resume=str(tmp_path))).run.resume == tmp_path / "checkpoints"


@pytest.mark.parametrize("name, precision, autocast", [("zero1", "fp32", False), ("zero2", "fp32", False),
                                                        ("zero3", "fp32", False), ("zero2_offload", "fp32", False),
                                                        ("bf16", "bf16", True)])
def test_each_shipped_deepspeed_file_declares_its_precision(name, precision, autocast):
    settings = DeepSpeedSettings.from_path(PROJECT / "ds_configs" / f"{name}.json")
    assert (settings.precision, settings.autocast) == (precision, autocast)


def test_two_mixed_precision_modes_are_refused(tmp_path):
    path = tmp_path / "both.json"
    path.write_text(json.dumps({"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 2},
                                "bf16": {"enabled": True},
                                "torch_autocast": {"enabled": True, "dtype": "bfloat16"}}))
    with pytest.raises(ConfigError, match="mixed-precision modes"):
        DeepSpeedSettings.from_path(path)


def test_student_dropout_leaves_attention_dropout_off_when_attentions_are_compared(defaults):
    """``student.dropout`` sets every dropout, except the attention's when a term compares attention
    probabilities (a dropped probability is not part of the distribution)."""
    from torch import nn

    from kd_plugin.training.models import build_models

    cfg = with_update(with_update(defaults, "teacher", "random-tiny"), "student.dropout", 0.3)
    cfg["loss_weights"] = {**cfg["loss_weights"], "attention_kl": 1.0}
    student = build_models(DistillConfig.from_dict(cfg)).module.student
    attention = [layer.attention.dropout for layer in student.distilbert.transformer.layer]
    others = [m for m in student.modules() if isinstance(m, nn.Dropout) and all(m is not a for a in attention)]
    assert attention and all(d.p == 0.0 for d in attention)
    assert others and all(d.p == 0.3 for d in others)
    without = dict(cfg, loss_weights={**cfg["loss_weights"], "attention_kl": 0.0})
    student = build_models(DistillConfig.from_dict(without)).module.student
    assert all(layer.attention.dropout.p == 0.3 for layer in student.distilbert.transformer.layer)
