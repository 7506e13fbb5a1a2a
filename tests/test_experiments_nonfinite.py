"""Non-finite training is a failure, never a success: a teacher with NaN weights, a loss that goes NaN mid-run,
a student with NaN weights given to fine-tuning, temperatures and loss weights that would zero or overflow a term,
and ablation tables over runs with non-finite metrics. Through the real command line and the real SecantusDB
(read back over pymongo), as users meet them.

How training is made to go non-finite mid-run, reliably and in seconds (``trigger_teacher``): the learning rate
is bounded by 1 and Adam moves a weight by about lr per step, so an fp32 run cannot be made to explode in a few
steps by its settings. Instead the teacher overflows on one token: in a tiny random BERT, dimension 0 of every
embedding is 0 except for the word "zebra", whose LayerNorm'd embedding is then about sqrt(31) = 5.6 there
(every other token's is about N(0, 1/32)), and the first layer's query reads dimension 0 with weight 1e38.
Every weight is finite; "zebra"'s query is 5.6e38 = inf in fp32, its attention row NaN, and the NaN spreads over
its sequence only. The corpus holds one line with "zebra" among ordinary ones; the student starts from random
weights (``student.layers=random_init``), so only the terms that read the teacher (``ce``, ``cos``) go NaN, at
the step whose batch holds that line (seeded: the same step every run, after finite ones).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pymongo
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

from kd_plugin.teacher_catalogue import BERT_TINY_VOCAB, RANDOM_TINY_CONFIG, resolve_teacher
from tests.distill_runner import LEARNING_SMOKE, PROJECT, read_metrics, run_distill, run_env

FINETUNE = str(PROJECT / "experiments" / "finetune.py")
WORDS = ("river city music science history garden winter market village school football island painting "
         "railway mountain library festival harbour castle forest theatre bridge museum valley").split()


@pytest.fixture
def db(mongo_url):
    name = f"kd_nonfinite_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def runs(db) -> list[dict]:
    return list(pymongo.MongoClient(db[0])[db[1]]["runs"].find({}, {"status": 1, "info": 1, "fail_trace": 1}))


def one_line(stderr: str, prefix: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-4000:]
    return lines[0]


def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_teacher("random-tiny").path)


def save(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    tokenizer().save_pretrained(directory)
    return directory


def tiny_bert() -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(**BERT_TINY_VOCAB, **RANDOM_TINY_CONFIG)).eval()


def trigger_teacher(directory: Path) -> Path:
    """Finite weights whose output is NaN on sequences holding "zebra" (module docstring)."""
    model, zebra = tiny_bert(), tokenizer().convert_tokens_to_ids("zebra")
    with torch.no_grad():
        embeddings = model.bert.embeddings
        for table in (embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings):
            table.weight[:, 0] = 0.0
        embeddings.word_embeddings.weight[zebra, 0] = 1000.0
        query = model.bert.encoder.layer[0].attention.self.query
        query.weight[0, :] = 0.0
        query.weight[0, 0] = 1e38
        query.bias[0] = 0.0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return save(model, directory)


def corpus(path: Path, n_lines: int = 63) -> Path:
    """Ordinary lines and one with "zebra" (line 40)."""
    rng = np.random.default_rng(0)
    lines = [f"the {' '.join(rng.choice(WORDS, size=6))} of the old town was known for its {rng.choice(WORDS)}."
             for _ in range(n_lines)]
    lines.insert(40, "a zebra stood near the river in the old town, far from the market and the school.")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_teacher_with_nan_weights_is_refused_before_the_engine_and_recorded_failed(tmp_path, db):
    model = tiny_bert()
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight[3, 5] = float("nan")
        model.bert.encoder.layer[1].output.dense.bias[2] = float("inf")
    teacher = save(model, tmp_path / "nan-teacher")
    out = tmp_path / "run"
    proc = run_distill([*LEARNING_SMOKE, "max_steps=2", "eval_max_sequences=0", f"teacher={teacher}",
                        f"output_dir={out}"], run_env(*db))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line(proc.stderr, "configuration error: teacher: ")
    assert "weights that are not finite: bert.encoder.layer.1.output.dense.weight (1 NaN), " \
           "bert.encoder.layer.1.output.dense.bias (1 inf)" in line, line
    (record,) = runs(db)  # refused after loading the teacher, inside the run: FAILED, never COMPLETED
    assert record["status"] == "FAILED"
    assert not (out / "student").exists() and not (out / "checkpoints").exists()  # no engine, no export


def test_a_loss_that_goes_nan_mid_run_stops_it_failed_with_the_step_and_the_term(tmp_path, db):
    out = tmp_path / "run"
    teacher, text = trigger_teacher(tmp_path / "trigger-teacher"), corpus(tmp_path / "corpus.txt")
    proc = run_distill([*LEARNING_SMOKE, f"teacher={teacher}", f"data.corpus={text}", "data.held_out_fraction=0.0",
                        "max_steps=8", "log_every=1", "checkpoint_every=1", "eval_max_sequences=0",
                        f"output_dir={out}"], run_env(*db))
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line(proc.stderr, "training diverged: ")
    found = re.match(r"training diverged: loss_ce is nan at step (\d+) \(of 8\) \(also loss_cos; the last finite "
                     r"losses were at step (\d+)\)", line)
    assert found, line
    step = int(found.group(1))
    assert int(found.group(2)) == step - 1
    assert step >= 2, f"the trigger line is met at step {step}: choose another seed so the run has finite steps first"
    # the steps before were finite and logged; the non-finite one was not; nothing was exported
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == list(range(1, step))
    assert all(math.isfinite(m[key]) for m in metrics for key in ("loss", "loss_ce", "loss_cos"))
    good = out / "checkpoints" / f"step{step - 1:08d}"
    assert f"the last good checkpoint is {good} (step {step - 1})" in line and good.is_dir()
    assert not (out / "student").exists()
    (record,) = runs(db)
    assert record["status"] == "FAILED"
    assert record["info"]["diverged"]["step"] == step and record["info"]["diverged"]["term"] == "loss_ce"
    assert "TrainingDiverged" in "".join(record["fail_trace"])


def test_finetuning_refuses_a_student_with_nan_weights_before_the_run(tmp_path, db):
    student = DistilBertForMaskedLM(DistilBertConfig(vocab_size=BERT_TINY_VOCAB["vocab_size"], dim=32, n_layers=1,
                                                     n_heads=2, hidden_dim=64))
    with torch.no_grad():
        student.distilbert.transformer.layer[0].ffn.lin1.weight[0, 0] = float("nan")
    save(student, tmp_path / "student")
    proc = subprocess.run([sys.executable, FINETUNE, "with", "smoke", f"model={tmp_path / 'student'}",
                           f"output_dir={tmp_path / 'eval'}"], env=run_env(*db), cwd=PROJECT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line(proc.stderr, "configuration error: model: ")
    assert "weights that are not finite: distilbert.transformer.layer.0.ffn.lin1.weight (1 NaN)" in line, line
    assert runs(db) == [] and not (tmp_path / "eval").exists()  # refused in the config hook: nothing trained


def test_a_loaded_model_with_nan_weights_is_refused_whatever_its_source(tmp_path):
    """The check at load time (e.g. ``distillation.teacher_model``), under the key that named the model."""
    from kd_plugin.downstream.model_loading import load_classifier, resolve_model
    from kd_plugin.errors import ConfigError

    model = tiny_bert()
    with torch.no_grad():
        model.bert.embeddings.LayerNorm.weight[0] = float("-inf")
    save(model, tmp_path / "teacher")
    key = "distillation.teacher_model"
    with pytest.raises(ConfigError) as err:
        load_classifier(resolve_model(str(tmp_path / "teacher"), key), ["neg", "pos"], seed=0, key=key)
    assert err.value.key == key and "bert.embeddings.LayerNorm.weight (1 inf)" in str(err.value)


@pytest.mark.parametrize("update, key, allowed", [
    ("T=1e-30", "T", "T > 0 within [0.1, 100]"),
    ("alpha_ce=1e30", "alpha_ce", "0 (off), or a number >= 0.001 and <= 1000"),
    ("loss_weights.hidden_mse=1e-30", "loss_weights.hidden_mse", "0 (off), or a number >= 0.001 and <= 1000"),
])
def test_temperatures_and_weights_that_zero_or_overflow_a_term_are_refused(tmp_path, db, update, key, allowed):
    proc = run_distill(["smoke", update, f"output_dir={tmp_path / 'never'}"], run_env(*db))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line(proc.stderr, f"configuration error: {key}: ")
    assert line.endswith(f"; allowed: {allowed}"), line
    assert runs(db) == [] and not (tmp_path / "never" / "checkpoints").exists()


def test_the_ranges_hold_at_their_bounds():
    from kd_plugin.errors import ConfigError
    from kd_plugin.losses import MixtureDeclaration

    for temperature in (0.1, 100.0):
        MixtureDeclaration({"ce": 1e-3, "cos": 1000.0, "mlm": 0.0}, temperature=temperature).validate()
    for declaration, key in [(dict(weights={"ce": 1.0}, temperature=0.0999), "T"),
                             (dict(weights={"ce": 1.0}, temperature=100.01), "T"),
                             (dict(weights={"ce": 1.0, "cos": 0.000999}), "loss_weights.cos"),
                             (dict(weights={"ce": 1000.1}), "loss_weights.ce")]:
        with pytest.raises(ConfigError) as err:
            MixtureDeclaration(**declaration).validate()
        assert err.value.key == key


def test_an_ablation_table_counts_only_the_runs_its_means_are_over():
    from analysis import ablation_table

    runs = pd.DataFrame({
        "variant": ["full", "full", "full", "full", "no_ce", "no_ce"],
        "seed": [1, 2, 3, 4, 1, 2],
        "final.loss": [2.0, float("nan"), 4.0, float("inf"), 3.0, 5.0],
        "downstream.macro_accuracy": [0.8, 0.7, 0.6, 0.9, 0.75, None],
    }, index=pd.Index([11, 12, 13, 14, 21, 22], name="run_id"))
    with pytest.warns(UserWarning, match=r"3 run\(s\) .* full: \[12, 14\]; no_ce: \[22\]"):
        table = ablation_table(runs, metrics=["final.loss", "downstream.macro_accuracy"],
                               reference={"variant": "full"})
    assert table.loc["full", "n_runs"] == 2 and table.loc["full", "n_seeds"] == 2  # runs 11 and 13
    assert table.loc["full", "final.loss mean"] == pytest.approx((2.0 + 4.0) / 2)
    assert table.loc["full", "downstream.macro_accuracy mean"] == pytest.approx((0.8 + 0.6) / 2)
    assert table.loc["no_ce", "n_runs"] == 1 and table.loc["no_ce", "final.loss mean"] == 3.0
    assert table.attrs["dropped_runs"] == {"full": [12, 14], "no_ce": [22]}
    assert json.dumps(table.attrs["dropped_runs"])  # plain ids, savable with the table

    # a metric that no run of a row has (the term was off: final.loss_ce of no_ce) drops nothing
    runs["final.loss_ce"] = [1.0, 1.0, 1.0, 1.0, None, None]
    with pytest.warns(UserWarning, match=r"2 run\(s\) .* full: \[12, 14\]$"):
        table = ablation_table(runs, metrics=["final.loss", "final.loss_ce"], reference={"variant": "full"})
    assert table.attrs["dropped_runs"] == {"full": [12, 14]} and table.loc["no_ce", "n_runs"] == 2
    assert np.isnan(table.loc["no_ce", "final.loss_ce mean"])


def test_skipped_steps_stop_the_run_unless_the_fp16_loss_scale_can_still_drop(tmp_path):
    """DeepSpeed's fp16 cannot run on CPU: the watch is driven with the scaler states it reads."""
    from types import SimpleNamespace

    from kd_plugin.training.divergence import DivergenceWatch, TrainingDiverged

    finite = {"loss": 1.0, "loss_ce": 0.5}
    fp32 = SimpleNamespace()  # no loss scaler: a skipped step is a non-finite gradient
    searching = SimpleNamespace(loss_scaler=SimpleNamespace(dynamic=True, cur_scale=2.0**14, min_scale=1.0))
    at_floor = SimpleNamespace(loss_scaler=SimpleNamespace(dynamic=True, cur_scale=1.0, min_scale=1.0))

    watch = DivergenceWatch(total_steps=10, checkpoint_dir=tmp_path)
    watch.check(2, finite, skipped_steps=2, optimizer=searching, final=False, log_every=2)  # the scaler's search
    watch.check(4, finite, skipped_steps=3, optimizer=at_floor, final=False, log_every=2)  # one of two applied
    with pytest.raises(TrainingDiverged, match=r"gradient norm is not finite at step 6 \(of 10\) \(every optimizer "
                                               r"step of steps 5-6 was skipped"):
        watch.check(6, finite, skipped_steps=5, optimizer=at_floor, final=False, log_every=2)
    with pytest.raises(TrainingDiverged, match="step 1 was skipped"):
        DivergenceWatch(10, tmp_path).check(1, finite, skipped_steps=1, optimizer=fp32, final=False, log_every=1)
    nothing_applied = DivergenceWatch(4, tmp_path)
    nothing_applied.check(2, finite, skipped_steps=2, optimizer=searching, final=False, log_every=2)
    with pytest.raises(TrainingDiverged):  # the run ends without one applied step: the student is untrained
        nothing_applied.check(4, finite, skipped_steps=4, optimizer=searching, final=True, log_every=2)


def test_non_finite_student_weights_stop_the_run_before_the_export(tmp_path):
    from kd_plugin.training.divergence import DivergenceWatch, TrainingDiverged

    (tmp_path / "step00000003").mkdir()
    (tmp_path / "step00000005").mkdir()
    student = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with torch.no_grad():
        student[1].weight[0, 0] = float("nan")
    watch = DivergenceWatch(total_steps=6, checkpoint_dir=tmp_path)
    watch.check(4, {"loss": 1.0}, skipped_steps=0, optimizer=None, final=False, log_every=2)
    with pytest.raises(TrainingDiverged) as err:
        watch.check_weights(6, student)
    assert str(err.value).startswith("student weight 1.weight is nan at step 6 (of 6) (1.weight (1 NaN)); "
                                     f"the last good checkpoint is {tmp_path / 'step00000003'} (step 3)")
