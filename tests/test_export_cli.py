"""``python -m kd_plugin.export``: real checkpoints of the distill experiment (ZeRO 1, 2, 3) become Hugging Face
folders equal to the run's own exported student, with a model card; bad input is one line and exit status 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer, DistilBertConfig, pipeline

from kd_plugin.export.__main__ import main
from kd_plugin.export.checkpoint_state import MODEL_STATES_FILES, STUDENT_CONFIG_KEY
from tests.distill_runner import PROJECT, check, run_distill, run_env

DB_NAME = f"kd_test_export_{uuid.uuid4().hex[:8]}"


@dataclass
class DistillRun:
    stage: int
    output_dir: Path
    document: dict  # the run's record in the database
    database: str


@pytest.fixture(scope="module")
def database(mongo_url):
    yield mongo_url
    pymongo.MongoClient(mongo_url).drop_database(DB_NAME)


# ZeRO 1 and 3 are exported by the same command in tests/test_experiments_distill.py (every shipped DeepSpeed
# config), on the runs that test makes anyway; here one ZeRO-2 run serves every CLI test.
@pytest.fixture(scope="module", params=[2], ids=lambda stage: f"zero{stage}")
def distill_run(request, database, tmp_path_factory) -> DistillRun:
    """A two-step smoke distillation under ZeRO stage 2 (about 30-60 s on two cores)."""
    stage = request.param
    base = tmp_path_factory.mktemp(f"zero{stage}")
    out = base / "run"
    env = run_env(database, DB_NAME) | {"KD_RUNS_DIR": str(base / "runs"), "OMP_NUM_THREADS": "1"}
    check(run_distill(["smoke", "max_steps=2", "eval_max_sequences=0", "progress_bar=False", f"output_dir={out}",
                       f"deepspeed_config={PROJECT / 'ds_configs' / f'zero{stage}.json'}"], env))
    document = pymongo.MongoClient(database)[DB_NAME]["runs"].find_one({"config.output_dir": str(out)})
    assert document is not None and document["status"] == "COMPLETED"
    return DistillRun(stage, out, document, f"{database}/{DB_NAME}")


def strip_export_keys(checkpoints: Path) -> None:
    """Make the copied checkpoints look like an older run's (export format 1: resume keys only)."""
    for tag_dir in sorted(p for p in checkpoints.iterdir() if p.is_dir() and p.name.startswith("step")):
        states_file = next(tag_dir / name for name in MODEL_STATES_FILES if (tag_dir / name).is_file())
        states = torch.load(states_file, map_location="cpu", weights_only=False)
        for key in ("kd_export_format", STUDENT_CONFIG_KEY, "kd_tokenizer", "kd_card"):
            states.pop(key, None)
        torch.save(states, states_file)


def copy_checkpoints(run: DistillRun, tmp_path: Path) -> Path:
    """The run's checkpoints folder, copied (the tests change it), without the run's other files."""
    return Path(shutil.copytree(run.output_dir / "checkpoints", tmp_path / "checkpoints"))


def assert_same_weights(exported: Path, reference: Path) -> None:
    ours, theirs = load_file(exported / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    worst = max((ours[k].float() - theirs[k].float()).abs().max().item() for k in ours)
    assert worst < 1e-6, worst


def test_cli_exports_the_checkpoint_alone_with_weights_tokenizer_and_card(distill_run, tmp_path):
    checkpoints = copy_checkpoints(distill_run, tmp_path)
    out = tmp_path / "exported"
    proc = subprocess.run([sys.executable, "-m", "kd_plugin.export", str(checkpoints), str(out)], cwd=PROJECT,
                          env=run_env(), capture_output=True, text=True, timeout=300)
    check(proc)
    assert proc.stdout.strip().splitlines()[-1].startswith(f"wrote {out}: ")

    assert_same_weights(out, distill_run.output_dir / "student")
    model = AutoModelForMaskedLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "DistilBertForMaskedLM" and model.config.n_layers == 2
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    predictions = fill(f"The capital of France is {tokenizer.mask_token}.")
    assert len(predictions) == 5 and all(0 <= p["score"] <= 1 for p in predictions)

    card = ModelCard.load(out / "README.md")
    # random weights: no upstream model, no licence of their own; the test server is local: no address published
    assert card.data.base_model is None and card.data.license == "other" and card.data.pipeline_tag == "fill-mask"
    assert "random weights (no pretrained model)" in card.text
    assert "127.0.0.1" not in card.text and f"`{DB_NAME} (a server on the run's own machine)`" in card.text
    stored = card.data.to_dict()["kd_plugin"]
    assert stored["steps"] == 2 and stored["total_steps"] == 2 and stored["checkpoint"] == "step00000002"
    assert stored["tokens_seen"] == distill_run.document["result"]["tokens_seen"]
    assert stored["run_id"] == distill_run.document["_id"] and stored["zero_stage"] == distill_run.stage
    assert f"ZeRO stage {distill_run.stage}" in card.text and f"Sacred run `{distill_run.document['_id']}`" in card.text


def test_fallback_options_export_a_checkpoint_without_the_export_keys(distill_run, tmp_path, capsys):
    checkpoints = copy_checkpoints(distill_run, tmp_path)
    strip_export_keys(checkpoints)
    student_dir = distill_run.output_dir / "student"
    out = tmp_path / "exported"
    assert main([str(checkpoints), str(out)]) == 2
    assert "export format 1" in capsys.readouterr().err  # an older run's checkpoint: it says what to pass
    fallback = ["--student-config", str(student_dir), "--tokenizer", str(student_dir), "--tag", "step00000002"]
    assert main([str(checkpoints.parent / "checkpoints"), str(out), *fallback]) == 0
    assert "no model card" in capsys.readouterr().out and not (out / "README.md").exists()
    assert_same_weights(out, student_dir)
    assert main([str(checkpoints), str(out), *fallback]) == 2  # never over a model already there
    assert "already holds a model" in capsys.readouterr().err
    assert main([str(checkpoints), str(out), *fallback, "--overwrite"]) == 0
    capsys.readouterr()

    carded = tmp_path / "carded"  # a card from an earlier export does not stay beside other weights
    assert main([str(distill_run.output_dir), str(carded)]) == 0 and (carded / "README.md").is_file()
    assert main([str(distill_run.output_dir), str(carded), "--no-card", "--overwrite"]) == 0
    assert "no model card (--no-card)" in capsys.readouterr().out and not (carded / "README.md").exists()


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kd_plugin.export: "), captured.err
    return lines[0]


def fake_checkpoint(root: Path, client_state: dict) -> Path:
    """A checkpoints folder whose only tag holds a model-states file with ``client_state`` (no weights needed:
    the export keys are checked before any weight is read)."""
    (root / "step00000001").mkdir(parents=True)
    (root / "latest").write_text("step00000001")
    torch.save({"module": {}, "ds_version": "0.19.8", **client_state}, root / "step00000001" / MODEL_STATES_FILES[0])
    return root


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "no such folder"),
        ("empty", "no DeepSpeed checkpoint in"),
        ("no_model_states", "holds no model-states file"),
        ("format_1", "written by a kd_plugin trainer of export format 1"),
        ("not_kd", "not a kd_plugin distillation checkpoint (no kd_* keys in its client state; written by "
                   "DeepSpeed 0.19.8)"),
        ("newer", "written by a newer kd_plugin"),
        ("no_tokenizer", "no tokenizer folder"),
    ],
)
def test_bad_checkpoints_are_one_line_and_exit_status_2(tmp_path, capsys, layout, message):
    root = tmp_path / "checkpoints"
    config = DistilBertConfig(n_layers=1, dim=8, hidden_dim=16, n_heads=2, vocab_size=30).to_dict()
    if layout == "empty":
        root.mkdir()
    elif layout == "no_model_states":
        (root / "step00000001").mkdir(parents=True)
        (root / "latest").write_text("step00000001")
    elif layout == "format_1":
        fake_checkpoint(root, {"kd_step": 1, "kd_plan": {}, "kd_tokens_seen": 3})
    elif layout == "not_kd":
        fake_checkpoint(root, {})
    elif layout == "newer":
        fake_checkpoint(root, {"kd_export_format": 99, "kd_student_config": config, "kd_tokenizer": "tokenizer"})
    elif layout == "no_tokenizer":
        fake_checkpoint(root, {"kd_export_format": 2, "kd_student_config": config, "kd_tokenizer": "tokenizer"})
    assert main([str(root), str(tmp_path / "out")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()
