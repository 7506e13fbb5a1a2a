"""Nothing overwritten: a folder that holds an earlier run's results is refused unless the run resumes it (distill,
sweep, finetune, prepare_teacher), an export never lands in a folder that is not an earlier export unless asked,
and an export is written whole or not at all (a full disk or a failure leaves no half folder that loads as a
model, and an earlier export intact). Through the command lines, with the real SecantusDB."""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pymongo
import pytest
from transformers import AutoModelForMaskedLM, PreTrainedModel

from kd_plugin.export.__main__ import main as export_main
from tests.distill_runner import PROJECT, check, read_metrics, run_distill, run_env
from tests.test_experiments_sweep import STAND_IN

SWEEP = PROJECT / "experiments" / "sweep.py"
QUICK = ["smoke", "max_steps=2", "eval_max_sequences=0", "progress_bar=False"]


@pytest.fixture(scope="module")
def db(mongo_url):
    name = f"kd_folders_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def records(db) -> list[dict]:
    return list(pymongo.MongoClient(db[0])[db[1]]["runs"].find({}, {"status": 1, "info": 1, "config.output_dir": 1}))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, db) -> tuple[Path, dict]:
    """One finished smoke run (2 steps): its output folder and its record."""
    out = tmp_path_factory.mktemp("finished") / "run"
    check(run_distill([*QUICK, f"output_dir={out}"], run_env(*db)))
    (record,) = [r for r in records(db) if r["config"]["output_dir"] == str(out)]
    assert record["status"] == "COMPLETED" and (out / "student" / "model.safetensors").is_file()
    return out, record


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (hidden ones too): its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def config_error_line(output: str, key: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("configuration error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {key}: "), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Staging or set-aside folders an export left behind."""
    return sorted(p.name for p in folder.rglob("*") if ".kd-export-" in p.name or ".kd-replaced-" in p.name)


# ------------------------------------------------------------------------------------------ distill.py


def test_a_second_run_on_a_finished_runs_folder_is_refused_and_changes_nothing(finished, db):
    out, record = finished
    before, n_records = snapshot(out), len(records(db))
    proc = run_distill([*QUICK, f"output_dir={out}"], run_env(*db))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = config_error_line(proc.stderr, "output_dir")
    assert f"holds an earlier run (run {record['_id']}, started " in line  # the lock file named the first run
    assert "checkpoints up to step00000002" in line and "metrics.jsonl (2 log points)" in line and "student/" in line
    assert line.endswith(f"allowed: a new output_dir (or none: a fresh folder), or resume={out} output_dir={out} "
                         "to continue that run in its folder")
    assert snapshot(out) == before  # the student, metrics, checkpoints and lock file: same bytes, same times
    assert len(records(db)) == n_records  # refused before the run started: no second record


def test_the_finished_runs_folder_is_accepted_when_the_run_resumes_from_it(finished, db, tmp_path):
    first, record = finished
    out = Path(shutil.copytree(first, tmp_path / "run"))  # the fixture's folder stays as it is
    proc = run_distill([*QUICK, f"output_dir={out}", f"resume={out}"], run_env(*db))
    check(proc)
    (resumed,) = [r for r in records(db) if r["config"]["output_dir"] == str(out)]
    assert resumed["status"] == "COMPLETED" and resumed["info"]["resumed_from_run"] == record["_id"]
    assert [m["step"] for m in read_metrics(out)] == [1, 2]  # one curve, nothing appended
    assert json.loads((out / ".kd-run.lock").read_text())["run_id"] == resumed["_id"]  # the folder's latest run
    AutoModelForMaskedLM.from_pretrained(out / "student")  # re-exported over the earlier student, whole
    assert leftovers(out) == []


def test_a_full_disk_during_the_final_export_leaves_no_student_folder_and_a_failed_record(finished, db, tmp_path):
    """On a real file system that holds the run's checkpoint but not its student (tmpfs; needs root)."""
    first, _ = finished
    files = [p for p in first.rglob("*") if p.is_file()]
    student = sum(p.stat().st_size for p in files if "student" in p.relative_to(first).parts)
    rest = sum(p.stat().st_size for p in files if "student" not in p.relative_to(first).parts)
    size_kib = (rest + student // 3 + 4096 * len(files)) // 1024 + 64  # the checkpoint fits, a third of the student
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(small)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs here (root in the container is required): "
                    f"{mounted.stderr.decode().strip()}")
    out = small / "run"
    try:
        proc = run_distill([*QUICK, f"output_dir={out}"], run_env(*db))
        latest = (out / "checkpoints" / "latest").read_text().strip() if (out / "checkpoints" / "latest").exists() else None
        student_left, staged = (out / "student").exists(), leftovers(out) if out.exists() else []
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert latest == "step00000002" and not student_left and staged == []  # no half student, the checkpoint kept
    assert re.search(rf"cannot write the student to {re.escape(str(out / 'student'))}: no space left on "
                     rf"{re.escape(str(out))} \([\d.]+ [KM]?B free\); no half-written folder was left; the checkpoint "
                     rf"{re.escape(str(out / 'checkpoints' / 'step00000002'))} is intact", proc.stderr), proc.stderr[-3000:]
    (record,) = [r for r in records(db) if r["config"]["output_dir"] == str(out)]
    assert record["status"] == "FAILED"


# ------------------------------------------------------------------------------------------- sweep.py


def test_a_sweep_run_again_on_its_output_root_is_refused_before_anything_starts(finished, tmp_path):
    """A stand-in for distill.py records each run it is asked to start; the folders are a real run's."""
    root = tmp_path / "root"
    shutil.copytree(finished[0], root / "full-seed1")  # a finished run of the earlier sweep
    interrupted = Path(shutil.copytree(finished[0], root / "full-seed2"))
    shutil.rmtree(interrupted / "student")  # an interrupted one: checkpoint and metrics, no student
    (root / "logs").mkdir()
    (root / "logs" / "full-seed2.log").write_text("the earlier sweep's log\n")
    before = snapshot(root)
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    calls = tmp_path / "calls"
    calls.mkdir()
    env = dict(run_env(), STAND_IN_DIR=str(calls))
    command = [sys.executable, str(SWEEP), "--seeds", "1", "2", "3", "--variants", "full", "--output-root", str(root),
               "--script", str(stand_in), "smoke", "max_steps=2"]

    for extra in ([], ["--dry-run"]):
        proc = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=120, cwd=PROJECT, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = config_error_line(proc.stderr, "--output-root")
        assert f"{root} already holds runs of an earlier sweep (full-seed1, full-seed2)" in line
        assert "--resume" in line and "[sweep] start" not in proc.stdout
    assert list(calls.iterdir()) == [] and snapshot(root) == before  # nothing started, nothing written

    proc = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120, cwd=PROJECT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = {next(a for a in args if a.startswith("seed=")): args
               for args in (json.loads(p.read_text())["args"] for p in calls.iterdir())}
    assert sorted(started) == ["seed=2", "seed=3"]
    assert started["seed=2"][-1] == f"resume={str(interrupted.resolve())!r}"  # continued in its own folder
    assert not any(a.startswith("resume=") for a in started["seed=3"])  # a folder not used yet: a plain run
    assert re.search(r"^\[sweep\]\s+full\s+1\s+skipped\s", proc.stdout, re.M), proc.stdout
    assert (root / "logs" / "full-seed2.log").read_text().startswith("the earlier sweep's log\n")  # appended to


# ------------------------------------------------------------------------------- finetune, prepare_teacher


def test_finetune_and_prepare_teacher_refuse_a_folder_of_earlier_results(finished, db, tmp_path):
    earlier = tmp_path / "finetuned"
    earlier.mkdir()
    (earlier / "results.json").write_text('{"macro_accuracy": 0.75}')
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a preparation")
    before = snapshot(tmp_path)
    for script, updates, key in (
            ("finetune.py", [f"model={finished[0] / 'student'}", f"output_dir={earlier}",
                             "tasks=['conll2010_uncertainty']", "max_train_examples=64"], "output_dir"),
            ("prepare_teacher.py", ["smoke", f"output_dir={mine}"], "output_dir")):
        proc = subprocess.run([sys.executable, str(PROJECT / "experiments" / script), "with", *updates],
                              capture_output=True, text=True, timeout=600, cwd=PROJECT, env=run_env(*db))
        assert proc.returncode == 2, (script, proc.stderr[-3000:])
        assert "already holds" in config_error_line(proc.stderr, key)
    assert snapshot(tmp_path) == before
    assert not [r for r in records(db) if r.get("config", {}).get("output_dir") in (str(earlier), str(mine))]


# ----------------------------------------------------------------------------------------------- export


@pytest.fixture
def checkpoints(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished[0] / "checkpoints", tmp_path / "checkpoints"))


def one_line(captured: str) -> str:
    """The one line of the export's refusal (beside the progress bars of the loading that came before it)."""
    lines = [line for line in captured.splitlines() if line.startswith("kd_plugin.export: ")]
    assert len(lines) == 1 and "Traceback" not in captured, captured
    return lines[0]


def test_export_into_a_folder_that_is_not_an_export_is_refused_unless_overwrite(checkpoints, tmp_path, capsys):
    target = tmp_path / "project"
    target.mkdir()
    (target / "README.md").write_text("# my project\n")
    (target / "tokenizer.json").write_text("{}")
    (target / "notes.txt").write_text("keep me")
    before = snapshot(target)
    proc = subprocess.run([sys.executable, "-m", "kd_plugin.export", str(checkpoints), str(target)], cwd=PROJECT,
                          env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert one_line(proc.stderr) == (
        f"kd_plugin.export: {target} is not empty (README.md, notes.txt, tokenizer.json) and holds no earlier "
        "export (config.json with weights): choose a new or empty folder, or pass --overwrite to write the "
        "export's files into it (same-named files are replaced)")
    assert snapshot(target) == before

    assert export_main([str(checkpoints), str(target), "--overwrite"]) == 0  # asked for: the export's files in
    AutoModelForMaskedLM.from_pretrained(target)
    assert (target / "notes.txt").read_text() == "keep me" and "kd_plugin" in (target / "README.md").read_text()

    exported = tmp_path / "exported"  # an earlier export: refused without --overwrite, replaced with it
    assert export_main([str(checkpoints), str(exported)]) == 0
    (exported / "notes.txt").write_text("mine")
    before = snapshot(exported)
    capsys.readouterr()
    assert export_main([str(checkpoints), str(exported)]) == 2
    assert "already holds a model (config.json, model.safetensors)" in one_line(capsys.readouterr().err)
    assert snapshot(exported) == before
    assert export_main([str(checkpoints), str(exported), "--overwrite", "--no-card"]) == 0
    assert not (exported / "README.md").exists()  # the earlier export's card went with its weights
    assert (exported / "notes.txt").read_text() == "mine" and leftovers(tmp_path) == []


def _failing_after(original):
    def save_then_fail(self, folder, *args, **kwargs):
        original(self, folder, *args, **kwargs)  # the weights land completely ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full (the tokenizer)
    return save_then_fail


def test_a_failed_export_leaves_no_half_folder_and_an_earlier_export_intact(checkpoints, tmp_path, capsys,
                                                                            monkeypatch):
    earlier = tmp_path / "earlier"
    assert export_main([str(checkpoints), str(earlier)]) == 0
    before = snapshot(earlier)
    capsys.readouterr()
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", _failing_after(PreTrainedModel.save_pretrained))

    new = tmp_path / "new"
    assert export_main([str(checkpoints), str(new)]) == 2
    assert not new.exists() and leftovers(tmp_path) == []  # the complete weights never showed up as a model
    line = one_line(capsys.readouterr().err)
    assert "OSError: [Errno 28] No space left on device" in line and line.endswith(f"nothing was written to {new}")

    assert export_main([str(checkpoints), str(earlier), "--overwrite"]) == 2
    assert "No space left" in one_line(capsys.readouterr().err)
    assert snapshot(earlier) == before and leftovers(tmp_path) == []  # the earlier export, whole
