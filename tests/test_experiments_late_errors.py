"""Wrong values that used to surface only after models and data were built, with a raw traceback (or, for some,
not at all): each is now one line ``configuration error: <key>: ...``, exit status 2, from the config hook,
before any run record, model, tokenized corpus or engine exists. And the embedded database's data folder that
cannot be used falls back to file storage, as the README promises. Through the real command line and the real
SecantusDB; the database is read back over pymongo."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pymongo
import pytest
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from kd_plugin.teacher_catalogue import architecture_source
from tests.distill_runner import PROJECT, check, run_distill, run_env

QUICK = ["smoke", "max_steps=4", "progress_bar=False", "eval_max_sequences=0"]
ZERO2 = {"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 2}}


@pytest.fixture
def db(mongo_url):
    name = f"kd_late_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def refused(updates: list[str], key: str, db, tmp_path: Path, env: dict[str, str] | None = None,
            ranks: int = 1) -> str:
    """Run with ``updates``; assert the one-line refusal on ``key`` and that nothing was built or recorded.
    Returns the line."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    updates = [*QUICK, f"output_dir={out}", *updates]
    if not any(u.startswith("data.cache_dir=") for u in updates):
        updates.append(f"data.cache_dir={cache}")
    proc = run_distill(updates, dict(run_env(*db), **(env or {})), ranks=ranks)
    output = proc.stdout + proc.stderr
    lines = sorted({line for line in output.splitlines() if line.startswith("configuration error: ")})
    assert proc.returncode == 2 and len(lines) == 1, f"exit {proc.returncode}\n{output[-3000:]}"
    assert lines[0].startswith(f"configuration error: {key}: ") and "Traceback" not in output, output[-3000:]
    assert list(pymongo.MongoClient(db[0])[db[1]]["runs"].find()) == []  # no run record
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()  # no engine, no training
    assert not list(cache.glob("tokenized-*"))  # the corpus was not tokenized
    return lines[0]


# ----------------------------------------------------------------------------------- DeepSpeed JSON values

DS_CASES = {  # id: (the file's content, the key the error names, a word of the problem)
    "bf16 enabled 'yes'": ({**ZERO2, "bf16": {"enabled": "yes"}}, "deepspeed_config.bf16.enabled", "not a boolean"),
    "stage true": ({**ZERO2, "zero_optimization": {"stage": True}}, "deepspeed_config.zero_optimization.stage", "True"),
    "bf16 not an object": ({**ZERO2, "bf16": True}, "deepspeed_config.bf16", "not a JSON object"),
    "overlap_comm 'maybe'": ({**ZERO2, "zero_optimization": {"stage": 2, "overlap_comm": "maybe"}},
                             "deepspeed_config.zero_optimization.overlap_comm", "'maybe'"),
    "offload device": ({**ZERO2, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu9"}}},
                       "deepspeed_config.zero_optimization.offload_optimizer.device", "'gpu9'"),
    "unknown ZeRO key": ({**ZERO2, "zero_optimization": {"stage": 2, "bogus_key": 1}},
                         "deepspeed_config.zero_optimization.bogus_key", "unknown key"),
    "fp16 loss_scale": ({**ZERO2, "fp16": {"enabled": True, "loss_scale": "big"}}, "deepspeed_config.fp16.loss_scale",
                        "must be a number"),
    "steps_per_print": ({**ZERO2, "steps_per_print": "often"}, "deepspeed_config.steps_per_print", "not an integer"),
    "unknown optimizer param": ({**ZERO2, "optimizer": {"type": "AdamW", "params": {"foo": 1}}},
                                "deepspeed_config.optimizer.params.foo", "not a parameter of"),
    "comet without comet_ml": ({**ZERO2, "comet": {"enabled": True}}, "deepspeed_config.comet.enabled", "comet_ml"),
}


@pytest.mark.parametrize("case", DS_CASES, ids=list(DS_CASES))
def test_malformed_deepspeed_values_are_refused_before_compute(case, tmp_path, db):
    content, key, problem = DS_CASES[case]
    # setup installs neither comet_ml nor wandb: their absence is what these cases test
    assert "comet" not in content or importlib.util.find_spec("comet_ml") is None, "comet_ml is installed here"
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(content))
    line = refused([f"deepspeed_config={path}"], key, db, tmp_path)
    assert problem in line and str(path) in line  # names the value and the file it is in


def test_a_deepspeed_json_that_is_not_text_is_refused(tmp_path, db):
    path = tmp_path / "ds.json"
    path.write_bytes(b"\xff\xfe" + json.dumps(ZERO2).encode("utf-16-le"))
    assert "is not valid JSON" in refused([f"deepspeed_config={path}"], "deepspeed_config", db, tmp_path)


# ------------------------------------------------------------------------- teacher, monitors, folders, seed


@pytest.fixture(scope="module")
def small_teachers(tmp_path_factory):
    """Two BERT teachers on the bert-tiny tokenizer (30522 tokens): 48 positions; a 1000-row vocabulary."""
    root = tmp_path_factory.mktemp("teachers")
    tokenizer = AutoTokenizer.from_pretrained(architecture_source("random-tiny").path)
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    for name, extra in (("short", dict(vocab_size=len(tokenizer), max_position_embeddings=48)),
                        ("small_vocab", dict(vocab_size=1000))):
        BertForMaskedLM(BertConfig(**size, **extra)).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def test_sequences_longer_than_the_teachers_positions_are_refused(small_teachers, tmp_path, db):
    line = refused([f"teacher={small_teachers / 'short'}"], "data.max_seq_length", db, tmp_path)  # smoke: 64
    assert "(48)" in line and "8..48" in line


def test_a_tokenizer_larger_than_the_teachers_vocabulary_is_refused(small_teachers, tmp_path, db):
    line = refused([f"teacher={small_teachers / 'small_vocab'}"], "teacher", db, tmp_path)
    assert "30522 tokens" in line and "1000 embedding rows" in line


def test_a_monitor_whose_package_is_missing_is_refused(tmp_path, db):
    assert importlib.util.find_spec("wandb") is None, "wandb is installed here: this case needs it missing"
    line = refused(['monitors=["wandb"]'], "monitors", db, tmp_path)
    assert "'wandb'" in line and "not installed" in line


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_cache_dir_that_cannot_be_written_is_refused(where, tmp_path, db):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cache_dir = blocker if where == "a file" else blocker / "cache"
    line = refused([f"data.cache_dir={cache_dir}"], "data.cache_dir", db, tmp_path)
    assert str(cache_dir) in line


def test_a_seed_numpy_cannot_take_is_refused(tmp_path, db):
    assert "4294967295" in refused(["seed=4294967296"], "seed", db, tmp_path)


def test_a_stop_step_after_the_schedules_end_is_refused(tmp_path, db):
    assert "after the schedule's last step (5)" in refused(["max_steps=5", "stop_at_step=9"], "stop_at_step", db,
                                                            tmp_path)


ENV_CASES = {  # id: (environment, updates, the key the error names)
    "KD_TRACKING_FINAL_WAIT not a number": ({"KD_TRACKING_FINAL_WAIT": "abc"}, [], "KD_TRACKING_FINAL_WAIT"),
    "KD_TRACKING_FINAL_WAIT negative": ({"KD_TRACKING_FINAL_WAIT": "-5"}, [], "KD_TRACKING_FINAL_WAIT"),
    "KD_DEAD_AFTER_S not a number": ({"KD_DEAD_AFTER_S": "soon"}, [], "KD_DEAD_AFTER_S"),
    "KD_MONGO_DB with a slash": ({"KD_MONGO_DB": "runs/today"}, [], "KD_MONGO_DB"),
    "KD_TEACHER_CACHE a file": ({"KD_TEACHER_CACHE": "<file>"}, ["teacher=bert-tiny-prepared"], "KD_TEACHER_CACHE"),
    "RANK not an integer": ({"RANK": "x", "WORLD_SIZE": "2"}, [], "RANK"),
    "WORLD_SIZE zero": ({"RANK": "0", "WORLD_SIZE": "0"}, [], "WORLD_SIZE"),
}


@pytest.mark.parametrize("case", ENV_CASES, ids=list(ENV_CASES))
def test_wrong_environment_values_are_refused_before_compute(case, tmp_path, db):
    env, updates, key = ENV_CASES[case]
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    env = {name: value.replace("<file>", str(blocker)) for name, value in env.items()}
    refused(updates, key, db, tmp_path, env=env)


# ------------------------------------------------------------------ the embedded database's data folder


def test_an_unusable_kd_db_dir_falls_back_to_file_storage_and_imports(tmp_path, mongo_url, db_name):
    data_dir = tmp_path / "blocker"
    data_dir.write_text("a file where the server's data folder should be")
    env = run_env()
    for name in ("KD_MONGO_URL", "KD_MONGO_DB"):
        env.pop(name, None)
    env.update(KD_DB_DIR=str(data_dir), KD_RUNS_DIR=str(tmp_path / "runs"))
    proc = run_distill([*QUICK, "max_steps=2", f"output_dir={tmp_path / 'run'}"], env)
    check(proc)
    storage = tmp_path / "runs" / "file_storage"
    assert "NO DATABASE" in proc.stderr and f"data directory {data_dir} ($KD_DB_DIR) is a file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((storage / "1" / "run.json").read_text())["status"] == "COMPLETED"
    printed = re.search(r"python -m kd_plugin\.tracking\.import_runs (\S+)", proc.stderr).group(1)
    assert Path(printed) == storage

    command = [sys.executable, "-m", "kd_plugin.tracking.import_runs", printed, "--url", mongo_url, "--db", db_name]
    imported = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    (run,) = list(pymongo.MongoClient(mongo_url)[db_name]["runs"].find())
    assert run["status"] == "COMPLETED" and run["result"]["steps"] == 2


# ------------------------------------------------------------------------------------------------ resume


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mongo_url):
    """One smoke run stopped at step 2 of 4 (ZeRO 2, one process): its checkpoints folder."""
    out = tmp_path_factory.mktemp("resumable") / "run"
    name = f"kd_late_ckpt_{uuid.uuid4().hex[:8]}"
    check(run_distill([*QUICK, "checkpoint_every=2", "stop_at_step=2", f"output_dir={out}"], run_env(mongo_url, name)))
    pymongo.MongoClient(mongo_url).drop_database(name)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step00000002"
    return out / "checkpoints"


def _damaged(checkpoint: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / "checkpoints"
    shutil.copytree(checkpoint, copy)
    tag = copy / "step00000002"
    model, optim = tag / "mp_rank_00_model_states.pt", tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    if how == "truncated model states":
        model.write_bytes(model.read_bytes()[:100_000])
    elif how == "garbage model states":
        model.write_bytes(bytes(range(256)) * 20)
    elif how == "truncated optimizer states":
        optim.write_bytes(optim.read_bytes()[:100_000])
    else:  # latest names a missing tag
        (copy / "latest").write_text("step00000099")
    return copy


@pytest.mark.parametrize("how", ["truncated model states", "garbage model states", "truncated optimizer states",
                                 "latest names a missing tag"])
def test_resuming_a_damaged_checkpoint_is_refused(how, checkpoint, tmp_path, db):
    line = refused([f"resume={_damaged(checkpoint, tmp_path, how)}"], "resume", db, tmp_path)
    assert ("step00000099" in line and "step00000002" in line) if "latest" in how else "damaged" in line


RESUME_CASES = {  # id: (updates, words of the problem)
    "other teacher layers": (["student.layers=first"], "teacher layers copied [0, 2]"),
    "other student depth": (["student.n_layers=1"], "n_layers 2"),
    "other student class": (["student.architecture=same"], "model type distilbert"),
    "other teacher": (["teacher=bert-tiny"], "'random-tiny'"),
    "ZeRO 3": ([f"deepspeed_config={PROJECT / 'ds_configs' / 'zero3.json'}"], "ZeRO stage 2"),
    "other sequence length": (["data.max_seq_length=32"], "data.max_seq_length=64"),
    "other micro-batch": (["batch.micro_batch_size=4"], "micro_batch_size=8"),
    "other schedule length": (["max_steps=6"], "total_steps=4"),
}


@pytest.mark.parametrize("case", RESUME_CASES, ids=list(RESUME_CASES))
def test_resuming_with_another_student_or_plan_is_refused(case, checkpoint, tmp_path, db):
    updates, problem = RESUME_CASES[case]
    assert problem in refused([f"resume={checkpoint}", *updates], "resume", db, tmp_path)


def test_resuming_with_another_number_of_processes_is_refused(checkpoint, tmp_path, db):
    line = refused([f"resume={checkpoint}"], "resume", db, tmp_path, ranks=2)
    assert "written by 1 process, this run has 2" in line
