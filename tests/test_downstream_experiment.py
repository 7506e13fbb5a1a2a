"""experiments/finetune.py: config checks, a smoke run with distillation during fine-tuning, and a run linked to
a saved distillation run through the test database (what the analysis table joins on)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pymongo
import pytest

from kd_plugin.downstream.run_config import validate_finetune_config
from kd_plugin.errors import ConfigError
from tests.distill_runner import check, run_env

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT / "experiments" / "finetune.py"


@pytest.fixture(scope="module")
def finetune_ex():
    """The Sacred experiment object, imported in-process (runs below are --unobserved).

    Importing it sets up a one-process launch environment (RANK, ...) and may rewrite sys.argv: both restored.
    """
    spec = importlib.util.spec_from_file_location("finetune_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    argv, environ = list(sys.argv), dict(os.environ)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    return module.ex


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
    ],
)
def test_bad_config_raises_config_error_naming_the_key(default_config, updates, key):
    cfg = {**default_config, "model": "random-tiny"}
    for name, value in updates.items():
        cfg[name] = {**cfg[name], **value} if isinstance(value, dict) and isinstance(cfg[name], dict) else value
    with pytest.raises(ConfigError) as info:
        validate_finetune_config(cfg)
    assert info.value.key == key


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
