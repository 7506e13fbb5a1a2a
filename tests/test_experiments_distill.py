"""The Sacred + DeepSpeed distillation experiment, end to end, as users run it."""

from __future__ import annotations

import uuid

import pymongo
import pytest
import torch
from transformers import AutoTokenizer, DistilBertForMaskedLM, pipeline

from kd_plugin.export.__main__ import main as export_main
from tests.distill_runner import LEARNING_SMOKE, check, read_metrics, run_distill, run_env


@pytest.fixture
def db(mongo_url):
    name = f"kd_test_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def test_smoke_distillation_lowers_loss_and_writes_loadable_student(tmp_path, db):
    out = tmp_path / "run"
    check(run_distill([*LEARNING_SMOKE, "max_steps=30", "log_every=1", f"output_dir={out}"], run_env(*db)))
    losses = [m["loss"] for m in read_metrics(out)]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"total loss did not fall enough: {first:.3f} -> {last:.3f}"

    student = DistilBertForMaskedLM.from_pretrained(out / "student")
    tokenizer = AutoTokenizer.from_pretrained(out / "student")
    assert student.config.n_layers == 2 and not hasattr(student.distilbert.embeddings, "token_type_embeddings")
    fill = pipeline("fill-mask", model=student, tokenizer=tokenizer)
    predictions = fill(f"The capital of France is {tokenizer.mask_token}.")
    assert len(predictions) == 5 and all(0 <= p["score"] <= 1 for p in predictions)
    # The exported weights are the trained fp32 master weights: a second export path (the checkpoint) agrees.
    last = sorted((out / "checkpoints").glob("step*/mp_rank_00_model_states.pt"))[-1]
    ckpt = torch.load(last, weights_only=False)
    word = ckpt["module"]["student.distilbert.embeddings.word_embeddings.weight"].float()
    assert torch.allclose(student.distilbert.embeddings.word_embeddings.weight, word, atol=1e-6)


def test_two_rank_launcher_run_matches_one_rank_with_double_accumulation(tmp_path, db):
    common = [*LEARNING_SMOKE, "max_steps=6", "log_every=1", "student.dropout=0.0"]
    one, two = tmp_path / "one", tmp_path / "two"
    check(run_distill([*common, f"output_dir={one}", "batch.gradient_accumulation_steps=2"], run_env(*db)))
    check(run_distill([*common, f"output_dir={two}", "batch.gradient_accumulation_steps=1"], run_env(*db), ranks=2))
    a, b = read_metrics(one), read_metrics(two)
    # Same 2A micro-batches per step (rank r takes batches r::2), same masks (seeded by batch position), no
    # dropout: only float summation order differs, so the curves agree to 1e-4 relative.
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-3)
    runs = pymongo.MongoClient(db[0])[db[1]]["runs"]
    two_rank = [r for r in runs.find({}, {"config.output_dir": 1, "status": 1}) if r["config"]["output_dir"] == str(two)]
    assert len(two_rank) == 1 and two_rank[0]["status"] == "COMPLETED"  # rank 0 alone records the job


# Through the real command line, one case per kind of check (each is a Python process importing torch and
# DeepSpeed); every key's own range and type is checked in-process in tests/test_config_distill.py.
@pytest.mark.parametrize(
    "update, key",
    [
        ("T=0", "T"),  # a range
        ("masking.mlm_probability=x", "masking.mlm_probability"),  # a string where a number is expected
        ("loss_weights.attention_kl=-2", "loss_weights.attention_kl"),  # a term of the registry, by its key
        ("loss_options.ce.rows=all", "loss_options.ce.rows"),  # a term's own option, checked when it is built
        ("student.layers=[0,0]", "student.layers"),  # needs the teacher: checked before any compute all the same
        ("deepspeed_config=ds_configs/missing.json", "deepspeed_config"),
        ("batch.effective_batch_size=20", "batch.effective_batch_size"),  # unreachable: nearest values named
    ],
)
def test_bad_config_fails_before_compute_naming_the_key(tmp_path, update, key, db):
    out = tmp_path / "never"
    proc = run_distill(["smoke", f"output_dir={out}", *update.split()], run_env(*db))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"configuration error: {key}:" in proc.stderr and "allowed" in proc.stderr
    assert not out.exists()  # nothing ran


def test_every_shipped_deepspeed_config_trains_the_same_student(tmp_path, db):
    """ZeRO-1/2/3 and CPU offload are the same optimisation, partitioned differently: identical curves in fp32.
    bf16 rounds activations, so its curve only stays close. Every run exports a loadable student."""
    common = ["smoke", "progress_bar=False", "max_steps=3", "log_every=1", "eval_max_sequences=0"]
    curves = {}
    for name in ("zero2", "zero1", "zero3", "zero2_offload", "bf16"):
        out = tmp_path / name
        proc = run_distill([*common, f"output_dir={out}", f"deepspeed_config=ds_configs/{name}.json"], run_env(*db))
        check(proc)
        curves[name] = [m["loss"] for m in read_metrics(out)]
        # progress_bar=False: one plain progress line per log point, repeating the logged loss
        progress = [line for line in proc.stderr.splitlines() if " - distill step " in line]
        assert [line.split(" - ", 2)[2].split(" | ")[0] for line in progress] == [
            f"distill step {m['step']}/3 ({100 * m['step'] / 3:.0f} %) loss {m['loss']:.4g} "
            f"tokens_per_second {m['tokens_per_second']:.4g}" for m in read_metrics(out)]
        student = DistilBertForMaskedLM.from_pretrained(out / "student")
        assert student.dtype == torch.float32
        # `python -m kd_plugin.export` turns the checkpoint alone into the same student, under every ZeRO stage
        assert export_main([str(out / "checkpoints"), str(tmp_path / f"{name}-exported")]) == 0
        again = DistilBertForMaskedLM.from_pretrained(tmp_path / f"{name}-exported").state_dict()
        assert max(float((again[k] - v).abs().max()) for k, v in student.state_dict().items()) < 1e-6
    for name in ("zero1", "zero3", "zero2_offload"):
        assert curves[name] == pytest.approx(curves["zero2"], rel=1e-5), name
    assert curves["bf16"] == pytest.approx(curves["zero2"], rel=2e-2)


def test_tokenizing_shows_a_bar_on_a_terminal_and_a_start_line_in_a_log(tmp_path, db):
    """A corpus not cached yet: with the progress bar, datasets' bars for cleaning and each split's tokenizing;
    without (a log file), no carriage-return bars but one line saying how many documents are tokenized where."""
    stderr = {}
    for bar in (True, False):
        out, cache = tmp_path / f"out-{bar}", tmp_path / f"cache-{bar}"
        proc = run_distill(["smoke", f"progress_bar={bar}", "max_steps=1", "eval_max_sequences=0",
                            f"data.cache_dir={cache}", f"output_dir={out}"], run_env(*db))
        check(proc)
        stderr[bar] = proc.stderr
    runs = pymongo.MongoClient(db[0])[db[1]]["runs"]
    for bar, text in stderr.items():
        record = runs.find_one({"config.progress_bar": bar})
        docs_in, cache = record["info"]["data"]["docs_in"], record["info"]["data"]["cache"]
        assert f"tokenizing {docs_in} documents into {cache} (1 process(es))" in text
    for bar_name in ("cleaning:", "tokenizing train:", "tokenizing held_out:"):
        assert bar_name in stderr[True] and bar_name not in stderr[False]
