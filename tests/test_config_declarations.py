"""Each distill setting declared once (kd_plugin/config): the Sacred defaults, print_config's comments, the parse
and the README's configuration table all follow the declarations."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from kd_plugin import validation as values
from kd_plugin.config import (
    DISTILL_BLOCKS,
    BatchSettings,
    DataSettings,
    DistillConfig,
    OptimSettings,
    PerformanceSettings,
    RunSettings,
    StudentSettings,
    distill_defaults,
    distill_docs,
)
from kd_plugin.config.declarations import Block, declared_keys, setting, table_rows, uncovered
from kd_plugin.config.distill import BATCH, DATA, MASKING, OPTIM, PERFORMANCE, RUN, STUDENT
from kd_plugin.config.sacred_defaults import DeclaredConfig
from kd_plugin.errors import ConfigError
from kd_plugin.masking import MaskingConfig
from tests.distill_runner import config_defaults, experiment_module

PROJECT = Path(__file__).resolve().parents[1]
REGISTRY_BLOCKS = ("loss_weights", "loss_options")  # their keys come from kd_plugin.losses' registry


def leaf_keys(config: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted not in REGISTRY_BLOCKS:
            keys |= leaf_keys(value, f"{dotted}.")
        else:
            keys.add(dotted)
    return keys


def test_the_experiment_registers_exactly_the_declared_defaults():
    experiment = experiment_module("distill.py", "distill_for_declaration_tests")
    assert config_defaults(experiment) == distill_defaults()


def test_every_key_print_config_shows_has_its_one_line_doc():
    docs = distill_docs()
    keys = leaf_keys(distill_defaults())
    assert keys == set(declared_keys(DISTILL_BLOCKS))
    assert all(docs.get(key) and "\n" not in docs[key] for key in keys)
    assert all(docs.get(block.name) for block in DISTILL_BLOCKS if block.name)  # the block's own comment


@pytest.mark.parametrize("settings_class, block", [
    (StudentSettings, STUDENT), (DataSettings, DATA), (BatchSettings, BATCH), (OptimSettings, OPTIM),
    (PerformanceSettings, PERFORMANCE), (RunSettings, RUN), (MaskingConfig, MASKING),
])
def test_every_field_of_a_block_is_a_declared_setting(settings_class, block):
    assert tuple(f.name for f in dataclasses.fields(settings_class)) == block.names()


def test_every_checked_setting_says_what_it_allows_under_its_key():
    for block in DISTILL_BLOCKS:
        for s in block.settings:
            if s.check is not None:
                assert s.allowed, block.key(s.name)


def test_a_declared_check_refuses_under_the_dotted_key():
    cfg = distill_defaults()
    cfg["data"]["max_seq_length"] = 4
    with pytest.raises(ConfigError) as err:
        DistillConfig.from_dict(cfg)
    assert str(err.value) == "data.max_seq_length: 4 is out of range; allowed: an integer >= 8 and <= 512"


def test_a_missing_key_reads_as_its_declared_default():
    cfg = distill_defaults()
    del cfg["data"]["encoding"], cfg["progress_bar"]
    config = DistillConfig.from_dict(cfg)
    assert config.data.encoding == "utf-8" and config.run.progress_bar is True


def test_the_preparation_keeps_its_own_lr_key_and_refuses_zero_clipping():
    optim = distill_defaults()["optim"]
    assert OptimSettings.from_dict(optim, lr=1e-3, lr_key="lr", clipping_may_be_zero=False).lr == 1e-3
    with pytest.raises(ConfigError) as err:
        OptimSettings.from_dict(optim, lr=0, lr_key="lr")
    assert err.value.key == "lr"
    with pytest.raises(ConfigError) as err:
        OptimSettings.from_dict({**optim, "max_grad_norm": 0.0}, lr=1e-3, lr_key="lr", clipping_may_be_zero=False)
    assert err.value.key == "optim.max_grad_norm" and err.value.allowed == "a number in (0.0, inf)"


@dataclass(frozen=True)
class _Toy:
    """What adding a setting looks like: one field, nothing else."""

    width: int = setting(4, "how wide", partial(values.integer, minimum=1, maximum=8))
    name: str = setting("a", "what it is called", partial(values.choice, choices=("a", "b")))


def test_one_declaration_gives_the_default_the_comment_the_override_and_the_check():
    toy = Block.of("toy", "a block for this test", _Toy)
    scope = DeclaredConfig([toy])
    summary = scope(fixed={"toy": {"width": 6}})
    assert dict(summary) == {"toy": {"width": 6, "name": "a"}}
    assert summary.docs == {"toy": "a block for this test", "toy.width": "how wide", "toy.name": "what it is called"}
    assert "toy.width" in summary.modified
    assert scope(fixed={"toy": {"width": None}}).typechanged == {"toy.width": (int, type(None))}
    # a key nobody declared stays "added" (Sacred refuses it) even when an earlier config entry holds it
    assert scope(fixed={"toy": {"typo": 1}}, preset={"toy": {"typo": 1}}).added == {"toy.typo"}
    assert _Toy(**toy.parse({"width": 2})) == _Toy(width=2, name="a")
    with pytest.raises(ConfigError, match=r"^toy.name: 'c' is not one of the choices; allowed: a, b$"):
        toy.parse({"name": "c"})
    assert toy["width"].allowed == "an integer >= 1 and <= 8"
    assert table_rows([toy])[2] == "| `toy.width` | `4` | an integer >= 1 and <= 8 | how wide |"


def readme_table_names() -> set[str]:
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = text.split("## What is configured", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_the_readme_configuration_table_names_exactly_the_declared_settings():
    """The README's "What is configured" table: each key or ``<block>.*`` in its first column is declared, and
    every declared key is named there (itself or by its block). ``table_rows(DISTILL_BLOCKS)`` renders the full
    table from the declarations."""
    unknown, missing = uncovered(DISTILL_BLOCKS, readme_table_names())
    assert not unknown, f"README names undeclared settings: {unknown}"
    assert not missing, f"README's configuration table lacks declared settings: {missing}"
