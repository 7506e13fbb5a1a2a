"""Faults sent to real `experiments/distill.py` processes: SIGTERM/SIGINT mid-training, kill -9 and resume,
two runs on one output folder, an unwritable folder, teachers that cannot be distilled. Each asserts the exit
status, the one-line message, what the database holds (read over its socket) and what is on disk."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
import pytest
from transformers import DistilBertForMaskedLM, GPT2Config, GPT2LMHeadModel

from tests.distill_runner import LEARNING_SMOKE, PROJECT, check, read_metrics, run_distill, run_env

SCRIPT = str(PROJECT / "experiments" / "distill.py")
LONG = [*LEARNING_SMOKE, "max_steps=400", "log_every=1", "eval_max_sequences=0"]


@pytest.fixture
def db(mongo_url):
    name = f"kd_faults_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def runs(db) -> list[dict]:
    return list(pymongo.MongoClient(db[0])[db[1]]["runs"].find({}, {"status": 1, "info": 1, "config.output_dir": 1}))


def start(updates: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SCRIPT, "with", *updates], env=env, cwd=PROJECT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_steps(out: Path, n: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {n}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"no step {n} within {timeout} s")


def test_sigterm_mid_training_checkpoints_marks_interrupted_and_prints_the_resume_command(tmp_path, db):
    out = tmp_path / "run"
    proc = start([*LONG, f"output_dir={out}"], run_env(*db))
    wait_for_steps(out, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted by SIGTERM")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    step = int(re.search(r"at step (\d+) of 400", lines[0]).group(1))
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step{step:08d}"
    (record,) = runs(db)
    assert record["status"] == "INTERRUPTED"
    assert [m["step"] for m in read_metrics(out)] == list(range(1, step + 1))

    # the printed command resumes it: a new record linked to the first, one curve in metrics.jsonl
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:3] == ["python", SCRIPT, "with"]
    resumed = subprocess.run([sys.executable, SCRIPT, *command[2:], f"stop_at_step={step + 2}"],
                             env=run_env(*db), cwd=PROJECT, capture_output=True, text=True, timeout=600)
    check(resumed)
    second = [r for r in runs(db) if r["_id"] != record["_id"]]
    assert len(second) == 1 and second[0]["status"] == "COMPLETED"
    assert second[0]["info"]["resumed_from_run"] == record["_id"]
    assert [m["step"] for m in read_metrics(out)] == list(range(1, step + 3))


def test_sigint_mid_training_exits_130_with_one_line(tmp_path, db):
    out = tmp_path / "run"
    proc = start([*LONG, f"output_dir={out}"], run_env(*db))
    wait_for_steps(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"^interrupted by SIGINT at step \d+ of 400; checkpoint in .*; resume with: ", stderr, re.M)
    assert [r["status"] for r in runs(db)] == ["INTERRUPTED"]


def test_kill_9_then_resume_gives_the_uninterrupted_runs_curve_and_weights(tmp_path, db):
    common = [*LEARNING_SMOKE, "max_steps=12", "log_every=1", "checkpoint_every=4", "eval_max_sequences=0"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    check(run_distill([*common, f"output_dir={full}"], run_env(*db)))
    proc = start([*common, f"output_dir={killed}"], run_env(*db))
    wait_for_steps(killed, 6, proc)
    proc.kill()  # SIGKILL: no handler runs; the last periodic checkpoint (step 4, or 8 if it got that far) stays
    proc.communicate(timeout=60)
    assert (killed / "checkpoints" / "latest").read_text().strip() in ("step00000004", "step00000008")
    check(run_distill([*common, f"output_dir={killed}", f"resume={killed}"], run_env(*db)))
    assert [m["step"] for m in read_metrics(killed)] == list(range(1, 13))  # the steps after the checkpoint are not logged twice
    for a, b in zip(read_metrics(full), read_metrics(killed), strict=True):  # dropout on: RNG states restored
        for key in ("loss", "loss_ce", "loss_cos", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    a = DistilBertForMaskedLM.from_pretrained(full / "student").state_dict()
    b = DistilBertForMaskedLM.from_pretrained(killed / "student").state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst


def test_a_second_run_on_the_same_output_dir_is_refused_while_the_first_runs(tmp_path, db):
    out = tmp_path / "shared"
    first = start([*LONG, f"output_dir={out}"], run_env(*db))
    try:
        wait_for_steps(out, 1, first)
        second = run_distill(["smoke", f"output_dir={out}"], run_env(*db))
        assert second.returncode == 2, second.stderr[-2000:]
        assert re.search(r"configuration error: output_dir: another run is writing to .*\(pid \d+", second.stderr)
        assert all(r["status"] != "COMPLETED" for r in runs(db))
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    lock = json.loads((out / ".kd-run.lock").read_text())
    assert lock["pid"] == first.pid  # released at exit: a third run may now take the folder


def test_an_output_dir_that_cannot_be_written_is_refused_before_compute(tmp_path, db):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    proc = run_distill(["smoke", f"output_dir={blocked / 'run'}"], run_env(*db))
    assert proc.returncode == 2 and "configuration error: output_dir:" in proc.stderr and "cannot be written" in proc.stderr
    assert runs(db) == []


def test_teachers_that_cannot_be_distilled_are_refused_before_compute(tmp_path, db):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64)).save_pretrained(gpt2)
    no_weights = tmp_path / "bert-without-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2,
                                                         "hidden_size": 32, "num_attention_heads": 2}))
    for teacher, key, problem in (
            (gpt2, "student.architecture", "a distilbert student cannot be built from a gpt2 teacher"),
            (no_weights, "teacher", "has a config.json but no weights")):
        proc = run_distill(["smoke", f"teacher={teacher}", f"output_dir={tmp_path / 'never'}"], run_env(*db))
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"configuration error: {key}: " in proc.stderr and problem in proc.stderr, proc.stderr[-2000:]
    assert runs(db) == [] and not (tmp_path / "never" / "checkpoints").exists()


def test_checkpoint_space_check_names_the_folder_the_free_space_and_the_estimate(tmp_path):
    from torch import nn

    from kd_plugin.training.disk_space import CheckpointSpaceError, check_space, checkpoint_bytes, free_bytes

    module = nn.Linear(10, 20)  # 220 trained parameters
    assert checkpoint_bytes(module) == int(220 * 12 * 1.05) and checkpoint_bytes(module, True) == int(220 * 16 * 1.05)
    check_space(tmp_path / "checkpoints", 1)  # a missing folder is measured on its nearest existing parent
    with pytest.raises(CheckpointSpaceError) as err:
        check_space(tmp_path / "checkpoints", free_bytes(tmp_path) + 2**40)
    assert re.search(rf"no space left on {re.escape(str(tmp_path / 'checkpoints'))}: [\d.]+ [KMGT]?B free, "
                     r"checkpoint needs ~[\d.]+ TB", str(err.value))


def test_a_full_disk_at_checkpoint_time_is_one_clear_error(tmp_path, db):
    """On a real 3 MB file system (tmpfs; needs the right to mount, as root in a container)."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs here (root in the container is required): "
                    f"{mounted.stderr.decode().strip()}")
    try:
        proc = run_distill(["smoke", "progress_bar=False", "max_steps=2", "eval_max_sequences=0",
                            f"output_dir={small / 'run'}"], run_env(*db))
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    assert proc.returncode != 0
    assert re.search(r"no space left on .*/small/run/checkpoints: [\d.]+ [KM]?B free, checkpoint needs ~[\d.]+ MB",
                     proc.stderr), proc.stderr[-3000:]
    assert "unexpected pos" not in proc.stderr
    assert [r["status"] for r in runs(db)] == ["FAILED"]
