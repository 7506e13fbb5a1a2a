"""experiments/finetune.py: the config parsed once (``FinetuneConfig.from_dict``) and its checks, a smoke run with
distillation during fine-tuning, and a run linked to a saved distillation run through the test database (what the
analysis table joins on)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import MappingProxyType

import pymongo
import pytest

from kd_plugin.downstream.finetune_config import FinetuneConfig
from kd_plugin.downstream.finetuning import FinetuneSettings
from kd_plugin.downstream.size_speed import SpeedSettings
from kd_plugin.errors import ConfigError
from tests.distill_runner import check, experiment_module, run_env

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT / "experiments" / "finetune.py"


@pytest.fixture(scope="module")
def finetune_ex():
    """The Sacred experiment object, imported in-process (runs below are --unobserved).

    Importing it sets up a one-process launch environment (RANK, ...) and may rewrite sys.argv: both restored.
    """
    return experiment_module("finetune.py", "finetune_experiment").ex


@pytest.fixture(scope="module")
def default_config(finetune_ex) -> dict:
    return dict(finetune_ex.run("print_config", options={"--unobserved": True}).config)


@pytest.mark.parametrize(
    ("updates", "key"),
    [
        ({"tasks": ["sst5"]}, "tasks"),
        ({"tasks": "mr_sentiment"}, "tasks"),
        ({"tasks": ["glue/stsb"]}, "tasks"),
        ({"lr": 0}, "lr"),
        ({"lr": [1e-4, 2.0]}, "lr[1]"),
        ({"lr": []}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"max_seq_length": 1024}, "max_seq_length"),
        ({"max_train_examples": 0}, "max_train_examples"),
        ({"threads": 0}, "threads"),
        ({"distillation": {"teacher_model": "bert-tiny", "alpha_ce": -1.0}}, "distillation.alpha_ce"),
        ({"distillation": {"teacher_model": "bert-tiny", "T": 0}}, "distillation.T"),
        ({"distillation": {"teacher_model": {"mr_sentiment": "/x"}}}, "distillation.teacher_model"),
        ({"distillation": {"temperature": 2.0}}, "distillation.temperature"),
        ({"size_speed": {"seq_length": 1000}}, "size_speed.seq_length"),
        # a string where a number is expected (what `with lr=x` hands over) names its key
        ({"lr": "x"}, "lr"),
        ({"lr": [1e-4, "x"]}, "lr[1]"),
        ({"batch_size": True}, "batch_size"),
        ({"weight_decay": "0.01"}, "weight_decay"),
        ({"split_seed": "0"}, "split_seed"),
        ({"distillation": {"T": "x"}}, "distillation.T"),
        ({"distillation": {"alpha_task": "x"}}, "distillation.alpha_task"),
        ({"distillation": {"teacher_lr": "x"}}, "distillation.teacher_lr"),
        ({"distillation": {"teacher_epochs": 1.5}}, "distillation.teacher_epochs"),
        ({"distillation": {"teacher_model": "bert-tiny", "alpha_task": 0, "alpha_ce": 0}}, "distillation.alpha_task"),
        ({"size_speed": {"repeats": "5"}}, "size_speed.repeats"),
        ({"size_speed": {"enabled": "yes"}}, "size_speed.enabled"),
        ({"save_models": "yes"}, "save_models"),
        ({"model": 3}, "model"),
        ({"distill_run_id": True}, "distill_run_id"),
        # unknown keys in a block are refused, naming block.key
        ({"size_speed": {"seqlength": 64}}, "size_speed.seqlength"),
        ({"distill_db": {"host": "localhost"}}, "distill_db.host"),
        ({"distillation": "bert-tiny"}, "distillation"),
    ],
)
def test_bad_config_raises_config_error_naming_the_key(default_config, updates, key):
    cfg = {**default_config, "model": "random-tiny"}
    for name, value in updates.items():
        cfg[name] = {**cfg[name], **value} if isinstance(value, dict) and isinstance(cfg[name], dict) else value
    with pytest.raises(ConfigError) as info:
        FinetuneConfig.from_dict(cfg)
    assert info.value.key == key


def test_error_messages_keep_their_shape(default_config):
    """``<key>: <problem>; allowed: <values>``, as before the config was parsed into objects."""
    cases = [
        ({"lr": "x"}, "lr: 'x' is not a finite number; allowed: a number in (0.0, 1.0]"),
        ({"max_seq_length": 1024}, "max_seq_length: 1024 exceeds BERT's 512 positions; allowed: 8..512"),
        ({"distillation": {**default_config["distillation"], "T": "x"}},
         "distillation.T: 'x' is not > 0; allowed: T > 0 (the paper: 2)"),
        ({"distillation": {**default_config["distillation"], "temperature": 2.0}},
         "distillation.temperature: unknown key; allowed: T, alpha_ce, alpha_task, teacher_epochs, teacher_lr, "
         "teacher_model"),
    ]
    for updates, message in cases:
        with pytest.raises(ConfigError) as info:
            FinetuneConfig.from_dict({**default_config, "model": "random-tiny", **updates})
        assert str(info.value) == message


def test_the_default_config_parses_into_typed_frozen_blocks(default_config):
    config = FinetuneConfig.from_dict({**default_config, "model": "bert-tiny"})
    assert config.tasks == ("mr_sentiment", "conll2010_uncertainty", "bbc_topics", "wiki_topics")
    assert config.source.model == "bert-tiny" and config.source.distill_run_id is None
    assert (config.source.distill_db.url, config.source.distill_db.name) == (None, None)
    for unset in (None, {}):  # `with distill_db=null` reads as the empty block, not as an error
        parsed = FinetuneConfig.from_dict({**default_config, "model": "bert-tiny", "distill_db": unset})
        assert parsed.source.distill_db == config.source.distill_db
    with pytest.raises(ConfigError) as info:
        FinetuneConfig.from_dict({**default_config, "model": "bert-tiny", "distill_db": "mongodb://h"})
    assert info.value.key == "distill_db"  # a URL where the block belongs: a block of url / name
    assert (config.splits.split_seed, config.splits.max_train_examples) == (0, None)
    assert config.training.learning_rates == (3e-4,)
    assert config.training.at(3e-4) == FinetuneSettings(max_seq_length=128, batch_size=32, eval_batch_size=128,
                                                        lr=3e-4, weight_decay=0.01, warmup_proportion=0.1,
                                                        max_grad_norm=1.0, epochs=3, seed=42, log_every=50,
                                                        progress_bar=True)
    assert not config.distillation.enabled and config.distillation.loss().alpha_task == 1.0  # labels only
    assert config.size_speed.enabled and config.size_speed.speed == SpeedSettings(32, 128, 5, 2)
    assert (config.threads, config.save_models, config.output_dir) == (None, False, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training.epochs = 1


def test_the_teacher_is_fine_tuned_with_its_own_lr_grid_and_epochs(default_config):
    distillation = {**default_config["distillation"], "teacher_model": {"mr_sentiment": "/a", "bbc_topics": "/b"},
                    "teacher_lr": [1e-4, 1e-3], "teacher_epochs": 5, "alpha_task": 0.3, "alpha_ce": 0.7, "T": 3}
    config = FinetuneConfig.from_dict({**default_config, "model": "random-tiny", "lr": [2e-4, 5e-4],
                                       "tasks": ["mr_sentiment", "bbc_topics"], "distillation": distillation})
    assert config.training.learning_rates == (2e-4, 5e-4) and config.training.epochs == 3
    assert config.teacher_training.learning_rates == (1e-4, 1e-3) and config.teacher_training.epochs == 5
    assert isinstance(config.distillation.teacher_model, MappingProxyType)
    loss = config.distillation.loss()
    assert (loss.alpha_task, loss.alpha_ce, loss.uses_teacher) == (0.3, 0.7, True)
    assert config.distillation.temperature == 3.0


def test_no_model_and_no_distill_run_fails_before_the_run(finetune_ex, capsys):
    with pytest.raises(SystemExit) as info:
        finetune_ex.run(options={"--unobserved": True})
    assert info.value.code == 2
    assert "configuration error: model: no model to evaluate" in capsys.readouterr().err


def test_smoke_run_with_distillation_during_fine_tuning(finetune_ex, tmp_path):
    run = finetune_ex.run(
        named_configs=["smoke"],
        config_updates={"tasks": ["mr_sentiment", "bbc_topics"], "output_dir": str(tmp_path / "out"),
                        "distillation": {"teacher_model": "random-tiny", "teacher_lr": 1e-3},
                        "lr": [1e-4, 3e-3], "size_speed": {"enabled": True}},
        options={"--unobserved": True},
    )
    result = run.result
    assert set(result["tasks"]) == {"mr_sentiment", "bbc_topics"}
    for name, task in result["tasks"].items():
        assert 0.0 <= task["accuracy"] <= 1.0 and 0.0 <= task["teacher_accuracy"] <= 1.0
        assert task["n_train"] == 64 and task["n_test"] == 32 and task["n_labels"] == {"mr_sentiment": 2, "bbc_topics": 5}[name]
        # the learning-rate grid: the chosen lr is the one with the best validation accuracy
        grid = task["lr_grid_validation_accuracy"]
        assert set(grid) == {"0.0001", "0.003"} and grid[f"{task['lr']:g}"] == max(grid.values())
        assert task["validation_accuracy"] == max(grid.values())
    accuracies = [t["accuracy"] for t in result["tasks"].values()]
    assert result["macro_accuracy"] == pytest.approx(sum(accuracies) / 2)
    teacher = [t["teacher_accuracy"] for t in result["tasks"].values()]
    assert result["teacher_macro_accuracy"] == pytest.approx(sum(teacher) / 2)
    # the reference of the size/speed report defaults to the distillation teacher
    assert result["size_speed"]["teacher"]["name"] == "random-tiny" and "speedup" in result["size_speed"]
    assert run.info["size_speed"] == result["size_speed"]
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.fixture
def db(mongo_url):
    name = f"kd_test_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def _tiny_student(path: Path) -> None:
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    from kd_plugin.teacher_catalogue import resolve_teacher

    tokenizer = AutoTokenizer.from_pretrained(resolve_teacher("bert-tiny").path)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    DistilBertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_run_linked_to_a_saved_distill_run_takes_its_student_and_is_saved(tmp_path, db):
    url, db_name = db
    student_dir = tmp_path / "student"
    _tiny_student(student_dir)
    client = pymongo.MongoClient(url)
    client[db_name]["runs"].insert_one({"_id": 7, "experiment": {"name": "distill"}, "status": "COMPLETED",
                                        "config": {"teacher": "random-tiny"}, "info": {"student_dir": str(student_dir)}})
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "with", "smoke", "model=None", "distill_run_id=7", "tasks=['conll2010_uncertainty']",
         f"output_dir={tmp_path / 'out'}"],
        env=run_env(url, db_name), cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )
    check(proc)
    doc = client[db_name]["runs"].find_one({"experiment.name": "finetune"})
    assert doc["status"] == "COMPLETED"
    assert doc["config"]["distill_run_id"] == 7 and doc["info"]["distill_run_id"] == 7
    assert doc["info"]["model"] == str(student_dir) and doc["info"]["distill_run"]["teacher"] == "random-tiny"
    result = doc["result"]
    assert result["tasks"]["conll2010_uncertainty"]["accuracy"] == pytest.approx(result["macro_accuracy"])
    # size/speed: the student against the distill run's teacher (4 layers vs 1)
    report = doc["info"]["size_speed"]
    assert report["teacher"]["name"] == "random-tiny" and report["student"]["layers"] == 1
    assert report["parameter_ratio"] < 1
    names = {m["name"] for m in client[db_name]["metrics"].find({"run_id": doc["_id"]}, {"name": 1})}
    assert {"conll2010_uncertainty/test_accuracy", "conll2010_uncertainty/train_loss", "macro_accuracy"} <= names

    # an unknown run id without a model stops before the run, naming the key
    proc = subprocess.run([sys.executable, str(SCRIPT), "with", "smoke", "model=None", "distill_run_id=99"],
                          env=run_env(url, db_name), cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "configuration error: distill_run_id:" in proc.stderr, proc.stderr[-2000:]

    # a model that is not run 7's student (`with smoke distill_run_id=7` keeps smoke's random-tiny) is refused:
    # its scores would be shown as run 7's downstream result; no finetune record is added
    for model in ("random-tiny", str(tmp_path / "other")):
        if model != "random-tiny":
            _tiny_student(tmp_path / "other")
        proc = subprocess.run([sys.executable, str(SCRIPT), "with", "smoke", f"model={model}", "distill_run_id=7"],
                              env=run_env(url, db_name), cwd=PROJECT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert (f"configuration error: model: '{model}' is not the student of distill run 7 (its student is "
                f"'{student_dir}')") in proc.stderr, proc.stderr[-2000:]
    assert client[db_name]["runs"].count_documents({"experiment.name": "finetune"}) == 1
    # the run's own student folder, named explicitly, is the same model: accepted (dry: print_config needs no run)
    from kd_plugin.downstream.run_link import DistillRun, check_model_is_the_runs_student

    check_model_is_the_runs_student(str(student_dir), 7, DistillRun(7, "distill", "COMPLETED", str(student_dir), None))


def test_a_prepared_teacher_resolves_by_its_catalogue_name_in_the_downstream_code(tmp_path):
    """``finetune.py with model=bert-tiny-prepared`` (the ablation's teacher reference) and the size/speed
    reference of a student distilled from a prepared teacher go through ``resolve_model``. In a fresh process
    the downstream package resolves the prepared names itself (``kd_plugin.preparation.resolve_teacher``; once
    only the distillation code knew them, and the name fell through to the hub: "couldn't connect to
    huggingface.co")."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from kd_plugin.preparation import locate
    from kd_plugin.preparation.recipes import RECORD_FILE, recipe_for
    from kd_plugin.teacher_catalogue import resolve_teacher

    root = tmp_path / "teachers"
    where = locate("bert-tiny", recipe_for("bert-tiny"), root)  # where the default recipe's teacher is cached
    shipped = resolve_teacher("bert-tiny").path
    AutoModelForMaskedLM.from_pretrained(shipped).save_pretrained(where.directory)  # stands in for a prepared one
    AutoTokenizer.from_pretrained(shipped).save_pretrained(where.directory)
    (where.directory / RECORD_FILE).write_text(json.dumps({"date": "2026-11-30", "accuracy": {}}))  # marks it complete
    code = ("from kd_plugin.downstream.model_loading import ALLOWED_MODELS, resolve_model\n"
            "print(ALLOWED_MODELS)\nprint(resolve_model('bert-tiny-prepared').path)")
    proc = subprocess.run([sys.executable, "-c", code], env={**run_env(), "KD_TEACHER_CACHE": str(root)},
                          cwd=PROJECT, capture_output=True, text=True, timeout=300)
    check(proc)
    lines = proc.stdout.strip().splitlines()
    assert "bert-tiny-prepared" in lines[0] and "minilm-l6-prepared" in lines[0]  # the names a user may give
    assert f"using the cached prepared teacher {where.directory}" in proc.stdout  # never prepared again
    assert lines[-1] == str(where.directory)  # the cached teacher, never looked up on the hub
