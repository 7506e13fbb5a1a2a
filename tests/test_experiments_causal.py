"""Causal-LM distillation through the real command line (``with causal_smoke``: a tiny random GPT-2 teacher, a
same-architecture student): recorded in the real database, exported as a ``GPT2LMHeadModel`` with a
text-generation card, scored by next-token accuracy and perplexity, fine-tuned downstream linked to its run, and
shown by the analysis with its family and objective; every bad pair refused before compute."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pymongo
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from kd_plugin.teacher_catalogue import resolve_teacher
from tests.distill_runner import PROJECT, check, read_metrics, run_distill, run_env

FINETUNE = PROJECT / "experiments" / "finetune.py"


@pytest.fixture(scope="module")
def database(mongo_url):
    name = f"kd_causal_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, database):
    out = tmp_path_factory.mktemp("causal") / "run"
    proc = run_distill(["causal_smoke", "progress_bar=False", "max_steps=6", f"output_dir={out}"], run_env(*database))
    check(proc)
    runs = pymongo.MongoClient(database[0])[database[1]]["runs"]
    (record,) = list(runs.find({"experiment.name": "distill"}))
    causal_run_output[:] = [proc.stdout, proc.stderr]
    return out, record


causal_run_output: list[str] = []  # the run's stdout and stderr


def test_the_record_names_the_commit_of_the_code_that_ran(causal_run):
    _, record = causal_run
    code = record["info"]["code"]
    if not (PROJECT / ".git").exists():  # a copy that is not a git checkout claims no commit
        assert code["commit"] is None and code["dirty"] is None
        return
    git = [["git", "rev-parse", "HEAD"], ["git", "status", "--porcelain", "--untracked-files=no"]]
    head, changed = (subprocess.run(c, cwd=PROJECT, capture_output=True, text=True, check=True).stdout.strip()
                     for c in git)
    assert code == {"commit": head, "dirty": bool(changed), "path": str(PROJECT)}


def test_logging_lines_are_in_the_runs_captured_output(causal_run):
    """What the console shows from the project's loggers, the record keeps (Sacred's capture)."""
    _, record = causal_run
    scores = record["result"]["held_out_clm"]
    line = (f"INFO - kd_plugin.evaluation.held_out - held-out next-token accuracy: teacher "
            f"{scores['teacher']['accuracy']:.3f}, student {scores['student']['accuracy']:.3f}")
    assert line in record["captured_out"] and line in causal_run_output[1]
    assert "INFO - kd_plugin.training.callbacks - distill step 6/6 (100 %)" in record["captured_out"]


def test_the_held_out_evaluation_shows_its_progress_in_plain_lines(causal_run):
    """progress_bar=False: each model's held-out batches (16 sequences each) as plain lines, one at each tenth."""
    _, record = causal_run
    for role in ("teacher", "student"):
        batches = -(-record["result"]["held_out_clm"][role]["n_sequences"] // 16)
        lines = [line for line in causal_run_output[0].splitlines()
                 if line.startswith(f"held-out next-token accuracy of the {role} batch ")]
        done = [int(line.split(" batch ")[1].split("/")[0]) for line in lines]
        assert done == sorted({-(-batches * k // 10) for k in range(1, 11)}), lines
        assert lines[-1].startswith(f"held-out next-token accuracy of the {role} batch {batches}/{batches} (100 %)")


def test_a_causal_run_is_recorded_with_its_family_objective_and_next_token_scores(causal_run):
    out, record = causal_run
    assert record["status"] == "COMPLETED"
    summary = record["info"]["student_summary"]
    assert (summary["family"], summary["objective"], summary["architecture"]) == ("gpt2", "causal_lm", "same")
    assert summary["model_class"] == "GPT2LMHeadModel" and summary["teacher_layers_copied"] == [0, 2]
    scores = record["result"]["held_out_clm"]
    assert "held_out_mlm" not in record["result"]
    for role in ("teacher", "student"):
        assert scores[role]["n_targets"] > 0
        assert scores[role]["perplexity"] == pytest.approx(float(torch.tensor(scores[role]["loss"]).exp()), rel=1e-6)
    logged = set(read_metrics(out)[-1])  # the metric names of the last logged point
    assert {"loss_ce", "loss_clm", "loss_cos"} <= logged and "loss_mlm" not in logged


def test_the_exported_student_is_a_gpt2_that_generates_and_its_card_says_text_generation(causal_run):
    out, _ = causal_run
    student = AutoModelForCausalLM.from_pretrained(out / "student")
    tokenizer = AutoTokenizer.from_pretrained(out / "student")
    assert isinstance(student, GPT2LMHeadModel) and student.config.n_layer == 2
    ids = tokenizer("the capital of france is", return_tensors="pt")
    generated = student.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5
    card = (out / "student" / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "GPT2LMHeadModel" in card
    assert "next-token accuracy" in card and "perplexity" in card
    assert "| targets | the next token at every position (no masking) |" in card and "| masking |" not in card


def test_the_analysis_shows_family_and_objective(causal_run, database):
    from analysis import load_runs

    table = load_runs(url=database[0], db=database[1], metrics=False, downstream=False)
    assert table["family"].tolist() == ["gpt2"] and table["objective"].tolist() == ["causal_lm"]


def test_a_decoder_student_is_fine_tuned_downstream_linked_to_its_run(causal_run, database, tmp_path):
    _, record = causal_run
    proc = subprocess.run(
        [sys.executable, str(FINETUNE), "with", "smoke", "model=None", f"distill_run_id={record['_id']}",
         "tasks=['conll2010_uncertainty']", f"output_dir={tmp_path / 'ft'}"],
        env=run_env(*database), cwd=PROJECT, capture_output=True, text=True, timeout=600)
    check(proc)
    doc = pymongo.MongoClient(database[0])[database[1]]["runs"].find_one({"experiment.name": "finetune"})
    assert doc["status"] == "COMPLETED" and doc["info"]["distill_run_id"] == record["_id"]
    assert 0.0 <= doc["result"]["macro_accuracy"] <= 1.0
    assert doc["info"]["size_speed"]["student"]["layers"] == 2


@pytest.fixture(scope="module")
def no_pad_gpt2(tmp_path_factory):
    """A causal teacher whose tokenizer has no pad token (as GPT-2's and Llama's)."""
    path = tmp_path_factory.mktemp("teachers") / "gpt2-no-pad"
    tokenizer = AutoTokenizer.from_pretrained(resolve_teacher("random-tiny").path)
    tokenizer.pad_token = None
    tokenizer.bos_token, tokenizer.eos_token = "[CLS]", "[SEP]"  # a decoder's tokenizer: begin/end of text, no pad
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).pad_token_id is None
    return path


@pytest.mark.parametrize("updates, key, words", [
    (["causal_smoke", "alpha_mlm=2"], "alpha_mlm", "needs a masked_lm teacher"),
    (["smoke", "alpha_clm=1"], "alpha_clm", "needs a causal_lm teacher"),
    (["causal_smoke", "student.architecture=distilbert"], "student.architecture", "cannot be built from a gpt2"),
    (["causal_smoke", "student.n_layers=5"], "student.n_layers", "more than the teacher's 4"),
    (["causal_smoke", "loss_options.ce.rows=masked"], "loss_options.ce.rows", "need a masked-LM teacher"),
])
def test_pairs_the_objective_cannot_use_are_refused_before_compute(updates, key, words, database, tmp_path):
    proc = run_distill([*updates, f"output_dir={tmp_path / 'never'}"], run_env(*database))
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith("configuration error:")]
    assert len(line) == 1 and line[0].startswith(f"configuration error: {key}: ") and words in line[0], line
    assert not (tmp_path / "never").exists()


def test_a_causal_teacher_without_a_pad_token_is_refused_saying_how_to_set_one(no_pad_gpt2, database, tmp_path):
    common = ["causal_smoke", f"teacher={no_pad_gpt2}"]
    proc = run_distill([*common, "data.pad_token=None", f"output_dir={tmp_path / 'never'}"], run_env(*database))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "configuration error: data.pad_token: the tokenizer of" in proc.stderr and "eos" in proc.stderr
    # with data.pad_token=eos (what causal_smoke sets) the same teacher distils, padding with [SEP] (its eos)
    out = tmp_path / "eos"
    check(run_distill([*common, "max_steps=2", "eval_max_sequences=0", f"output_dir={out}"], run_env(*database)))
    saved = json.loads((out / "student" / "tokenizer_config.json").read_text())
    assert saved.get("pad_token") == "[SEP]"


def test_a_teacher_without_a_family_adapter_is_refused_naming_the_supported_families(database, tmp_path):
    from transformers import ElectraConfig, ElectraForMaskedLM

    path = tmp_path / "electra"
    ElectraForMaskedLM(ElectraConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_teacher("random-tiny").path).save_pretrained(path)
    proc = run_distill(["smoke", f"teacher={path}", f"output_dir={tmp_path / 'never'}"], run_env(*database))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "configuration error: teacher: no model-family adapter for model type 'electra'" in proc.stderr
    assert all(f in proc.stderr for f in ("bert", "roberta", "gpt2", "llama"))


def test_zero3_and_bf16_train_the_same_causal_student(database, tmp_path):
    """The causal path under ZeRO-3 (parameters partitioned) and bf16 autocast: ZeRO-3 gives the ZeRO-2 curve
    exactly in fp32, bf16 stays close; both export a GPT2LMHeadModel that `python -m kd_plugin.export` rebuilds
    from the checkpoint alone."""
    from kd_plugin.export.__main__ import main as export_main

    common = ["causal_smoke", "progress_bar=False", "max_steps=3", "log_every=1", "eval_max_sequences=0"]
    curves = {}
    for name in ("zero2", "zero3", "bf16"):
        out = tmp_path / name
        check(run_distill([*common, f"output_dir={out}", f"deepspeed_config=ds_configs/{name}.json"],
                          run_env(*database)))
        curves[name] = [m["loss"] for m in read_metrics(out)]
        student = GPT2LMHeadModel.from_pretrained(out / "student")
        assert student.dtype == torch.float32
        assert export_main([str(out / "checkpoints"), str(tmp_path / f"{name}-exported")]) == 0
        again = GPT2LMHeadModel.from_pretrained(tmp_path / f"{name}-exported").state_dict()
        assert max(float((again[k] - v).abs().max()) for k, v in student.state_dict().items()) < 1e-6
    assert len(curves["zero2"]) == 3
    assert curves["zero3"] == pytest.approx(curves["zero2"], rel=1e-5)
    assert curves["bf16"] == pytest.approx(curves["zero2"], rel=2e-2)


def test_an_exported_student_is_recognised_as_its_runs_by_its_card_without_a_database(causal_run):
    from kd_plugin.downstream.run_link import check_model_is_the_runs_student
    from kd_plugin.errors import ConfigError

    out, record = causal_run
    check_model_is_the_runs_student(str(out / "student"), record["_id"], None)  # the card names the run
    with pytest.raises(ConfigError, match=r"model: .* is not the student of distill run 12345 \(the run could not"):
        check_model_is_the_runs_student(str(out / "student"), 12345, None)


def test_a_student_with_frozen_position_embeddings_trains_and_exports_them_unchanged(database, tmp_path):
    """student.freeze_position_embeddings=True (the original's --freeze_pos_embs) through the engine: the
    exported student's position table is the teacher's, its token table is not."""
    out = tmp_path / "frozen"
    check(run_distill(["causal_smoke", "student.freeze_position_embeddings=True", "max_steps=3",
                       "eval_max_sequences=0", "progress_bar=False", f"output_dir={out}"], run_env(*database)))
    from kd_plugin.teacher_catalogue import load_teacher

    teacher, _ = load_teacher(resolve_teacher("random-tiny-gpt2"), seed=42)  # causal_smoke's seed
    student = GPT2LMHeadModel.from_pretrained(out / "student")
    assert torch.equal(student.transformer.wpe.weight, teacher.transformer.wpe.weight)
    assert not torch.equal(student.transformer.wte.weight, teacher.transformer.wte.weight)
