"""Each teacher-preparation and fine-tuning setting declared once (kd_plugin/preparation/recipes.py,
preparation_config.py, kd_plugin/downstream/finetune_config.py, run_link.py): the experiments' Sacred defaults,
print_config's comments, the parse with its one-line error and docs/configuration.md all follow the declarations,
and the recipe (the cache key's input) is unchanged."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kd_plugin.config.declarations import Block, declared_keys, flat_docs, nested_defaults
from kd_plugin.downstream.finetune_config import (
    DISTILLATION,
    FINETUNE_BLOCKS,
    SIZE_SPEED,
    SPLITS,
    TRAINING,
    DistillationSettings,
    FinetuneConfig,
    SizeSpeedSettings,
    SplitSettings,
    TrainingSettings,
)
from kd_plugin.downstream.run_link import DISTILL_DB, DistillDatabase
from kd_plugin.errors import ConfigError
from kd_plugin.preparation.preparation_config import EVALUATION, PREPARATION_BLOCKS, EvaluationSettings
from kd_plugin.preparation.recipes import (
    BASE_RECIPE,
    CACHE_ENV,
    TEACHER_RECIPES,
    deep_update,
    recipe_for,
    recipe_of,
)
from tests.distill_runner import config_defaults, experiment_module, run_env

PROJECT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"prepare_teacher.py": PREPARATION_BLOCKS, "finetune.py": FINETUNE_BLOCKS}
UNOBSERVED = {"--unobserved": True}


@pytest.fixture(scope="module")
def experiments():
    return {script: experiment_module(script, f"{script[:-3]}_for_declaration_tests") for script in EXPERIMENTS}


def leaf_keys(config: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        if isinstance(value, dict):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_the_finetune_experiment_registers_exactly_the_declared_defaults(experiments):
    assert config_defaults(experiments["finetune.py"]) == nested_defaults(FINETUNE_BLOCKS)


def test_the_preparation_defaults_are_the_declared_ones_with_the_teachers_recipe(experiments):
    """The defaults of `teacher` (bert-tiny) are the declarations' with bert-tiny's own recipe values, and for
    every base teacher the recipe part is ``recipe_for(teacher)``: a manual run fills the catalogue's cache entry."""
    ex = experiments["prepare_teacher.py"].ex
    assert config_defaults(experiments["prepare_teacher.py"]) == deep_update(nested_defaults(PREPARATION_BLOCKS),
                                                                             TEACHER_RECIPES["bert-tiny"])
    assert recipe_of(nested_defaults(PREPARATION_BLOCKS)) == BASE_RECIPE
    for teacher in TEACHER_RECIPES:
        config = ex.run("print_config", config_updates={"teacher": teacher}, options=UNOBSERVED).config
        assert recipe_of(config) == recipe_for(teacher)
    # a value given on the command line wins over the teacher's own default
    config = ex.run("print_config", config_updates={"teacher": "minilm-l6", "steps": 5}, options=UNOBSERVED).config
    assert (config["steps"], config["train_head_only_steps"]) == (5, 600)


def test_the_cache_root_default_is_read_when_the_config_is_made(experiments, tmp_path, monkeypatch):
    ex = experiments["prepare_teacher.py"].ex
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert ex.run("print_config", options=UNOBSERVED).config["cache_root"] == str(tmp_path)


@pytest.mark.parametrize("script", EXPERIMENTS)
def test_every_key_print_config_shows_has_its_one_line_doc_and_says_what_it_allows(script):
    blocks = EXPERIMENTS[script]
    docs = flat_docs(blocks)
    assert leaf_keys(nested_defaults(blocks)) == set(declared_keys(blocks))
    assert all(docs.get(key) and "\n" not in docs[key] for key in declared_keys(blocks))
    assert all(docs.get(block.name) for block in blocks if block.name)
    for block in blocks:
        for s in block.settings:
            assert s.check is None or s.allowed, block.key(s.name)


@pytest.mark.parametrize("settings_class, block, renamed", [
    (SplitSettings, SPLITS, {}), (TrainingSettings, TRAINING, {"learning_rates": "lr"}),
    (DistillationSettings, DISTILLATION, {"temperature": "T", "teacher_learning_rates": "teacher_lr"}),
    (SizeSpeedSettings, SIZE_SPEED, {}), (EvaluationSettings, EVALUATION, {}), (DistillDatabase, DISTILL_DB, {}),
])
def test_every_field_of_a_block_is_a_declared_setting(settings_class, block: Block, renamed):
    assert tuple(renamed.get(f.name, f.name) for f in dataclasses.fields(settings_class)) == block.names()


def test_the_recipe_keeps_its_values_and_cache_keys():
    """The recipe's defaults come from its declarations now; these are the values (and, through
    ``test_cache_key_is_unchanged_by_the_config_refactor``, the keys) of the hand-written BASE_RECIPE before."""
    assert json.dumps(BASE_RECIPE, sort_keys=True) == json.dumps({
        "seed": 42, "batch_size": 32, "train_head_only_steps": 0, "head_lr": 1e-3, "steps": 300, "lr": 2e-4,
        "data": {"corpus": "wiki_leads", "max_seq_length": 128, "held_out_fraction": 0.02, "max_documents": None,
                 "sample_by": "line"},
        "masking": {"mlm_probability": 0.15, "mask_fraction": 0.8, "random_fraction": 0.1, "keep_fraction": 0.1,
                    "smoothing": 0.0},
        "optim": {"betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01, "warmup_proportion": 0.06,
                  "max_grad_norm": 1.0},
    }, sort_keys=True)


@pytest.mark.parametrize("updates, message", [
    ({"size_speed": {"warmup": -1}}, "size_speed.warmup: -1 is out of range; allowed: an integer >= 0"),
    ({"max_seq_length": "x"}, "max_seq_length: 'x' is not an integer; allowed: 8..512"),
    ({"max_grad_norm": 0}, "max_grad_norm: 0 is out of range; allowed: a number in (0.0, inf)"),
    ({"distill_db": {"url": ""}}, "distill_db.url: '' is not a MongoDB URL; allowed: a MongoDB URL or null"),
])
def test_a_declared_check_refuses_under_its_key(updates, message):
    config = deep_update(nested_defaults(FINETUNE_BLOCKS), updates)
    with pytest.raises(ConfigError) as err:
        FinetuneConfig.from_dict(config)
    assert str(err.value) == message


def reference_script():
    spec = importlib.util.spec_from_file_location("configuration_reference", PROJECT / "scripts"
                                                  / "configuration_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_configuration_md_is_generated_from_the_declarations():
    expected = reference_script().reference()
    written = (PROJECT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert written == expected, ("docs/configuration.md disagrees with the declarations: regenerate it with "
                                 "`.venv/bin/python scripts/configuration_reference.py > docs/configuration.md`")
    assert "docs/configuration.md" in (PROJECT / "README.md").read_text(encoding="utf-8")


# Through the real command line, once per experiment: one line naming the key and what is allowed, exit status 2,
# and nothing computed (no output folder, no prepared teacher).
def test_finetune_refuses_a_bad_value_on_the_command_line(tmp_path, mongo_url):
    out = tmp_path / "never"
    proc = subprocess.run([sys.executable, str(PROJECT / "experiments" / "finetune.py"), "with", "smoke",
                           "size_speed.warmup=-1", f"output_dir={out}"],
                          env=run_env(mongo_url, "kd_test_declarations"), cwd=PROJECT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("configuration error:")]
    assert errors == ["configuration error: size_speed.warmup: -1 is out of range; allowed: an integer >= 0"]
    assert not out.exists()
    assert "pkg_resources is deprecated" not in proc.stderr  # the experiments' one start-up quiets Sacred's import


def test_prepare_teacher_refuses_a_bad_value_and_print_config_shows_the_docs(tmp_path, mongo_url):
    script = str(PROJECT / "experiments" / "prepare_teacher.py")
    env = {**run_env(mongo_url, "kd_test_declarations"), CACHE_ENV: str(tmp_path / "teachers")}
    proc = subprocess.run([sys.executable, script, "with", "smoke", "evaluation.batch_size=0"],
                          env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("configuration error:")]
    assert errors == ["configuration error: evaluation.batch_size: 0 is out of range; allowed: an integer >= 1"]
    assert not (tmp_path / "teachers").exists()
    assert "pkg_resources is deprecated" not in proc.stderr
    printed = subprocess.run([sys.executable, script, "print_config", "with", "teacher=minilm-l6"], env=env,
                             cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert printed.returncode == 0, printed.stderr[-2000:]
    lines = printed.stdout.splitlines()
    assert any("train_head_only_steps = 600" in line and "# phase 1: only the MLM head trains" in line
               for line in lines)
    assert any(line.strip().startswith("evaluation:") and "# the held-out masked-token accuracy" in line
               for line in lines)


def test_each_experiment_is_named_after_its_own_script(experiments):
    """Sacred takes a run's main file, sources and description from the frame that creates the Experiment: each
    script creates its own, so runs are found by their script (``experiment.mainfile``) even when renamed."""
    for script, module in experiments.items():
        assert Path(module.ex.mainfile.filename).name == script
        assert module.ex.doc == module.__doc__
