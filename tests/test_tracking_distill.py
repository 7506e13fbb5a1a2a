"""Real distillation runs (``experiments/distill.py with smoke``) checked by reading what the database holds.

Each run is a subprocess, as a user would start it; the runs are tiny (a random 2-layer teacher, a few steps).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gridfs
import pymongo
import pytest

from kd_plugin.tracking import embedded_db
from tests.distill_runner import LAUNCH_VARIABLES

PROJECT = Path(__file__).resolve().parents[1]
LOSS_TERMS = ("loss", "loss_ce", "loss_mlm", "loss_cos")
STEP_SERIES = (*LOSS_TERMS, "lr", "grad_norm", "tokens_per_second")
EVAL_SERIES = ("held_out_mlm_accuracy_teacher", "held_out_mlm_accuracy_student")  # once, at the last step
ALL_SERIES = (*STEP_SERIES, *EVAL_SERIES)
RUN_TIMEOUT_S = 600  # generous: the machine may be shared with other heavy jobs


def distill_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a distillation subprocess: offline, no database configured unless ``extra`` says
    so, and the embedded server's data / local run files in ``tmp`` (never the user's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KD_") and k not in LAUNCH_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               KD_DB_DIR=str(tmp / "embedded"), KD_RUNS_DIR=str(tmp / "runs"), **extra)
    return env


def distill_command(output_dir: Path, *updates: str, beat_interval: float | None = None) -> list[str]:
    cmd = [sys.executable, str(PROJECT / "experiments" / "distill.py")]
    if beat_interval is not None:
        cmd += ["-b", str(beat_interval)]
    return cmd + ["with", "smoke", "progress_bar=False", "checkpoint_every=None", f"output_dir={output_dir}", *updates]


def run_distill(tmp: Path, *updates: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(distill_command(tmp / "out", *updates), env=distill_env(tmp, **env), cwd=PROJECT,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _db(url: str, name: str) -> pymongo.database.Database:
    return pymongo.MongoClient(url, serverSelectionTimeoutMS=10_000)[name]


def assert_complete_run(db, run: dict, logged_steps: list[int]) -> None:
    """The run's record is complete: status, result, info, one metric point per logged step, artifacts."""
    assert run["status"] == "COMPLETED"
    assert run["result"]["steps"] == logged_steps[-1] and run["result"]["finished"] is True
    assert {"deepspeed_config", "engine", "student_summary", "student_dir", "output_dir"} <= set(run["info"])
    assert {m["name"] for m in run["info"]["metrics"]} == set(ALL_SERIES)
    for name in STEP_SERIES:
        series = db.metrics.find_one({"run_id": run["_id"], "name": name})
        assert series["steps"] == logged_steps, name  # every logged step, once, in order
        assert len(series["values"]) == len(series["timestamps"]) == len(logged_steps)
    for name in EVAL_SERIES:
        series = db.metrics.find_one({"run_id": run["_id"], "name": name})
        assert series["steps"] == [logged_steps[-1]] and 0.0 <= series["values"][0] <= 1.0, name
    fs = gridfs.GridFS(db)
    names = {a["name"] for a in run["artifacts"]}
    assert "student_config.json" in names
    for artifact in run["artifacts"]:
        assert fs.get(artifact["file_id"]).filename == f"artifact://runs/{run['_id']}/{artifact['name']}"


# ------------------------------------------------------------------------------------------- one run


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, mongo_url):
    """One smoke distillation (8 steps, a point every 2) saved through KD_MONGO_URL into its own database."""
    tmp = tmp_path_factory.mktemp("distill")
    db_name = f"test_{uuid.uuid4().hex[:16]}"
    proc = run_distill(tmp, "max_steps=8", "log_every=2", "T=3.0", "alpha_cos=0.5",
                       KD_MONGO_URL=mongo_url, KD_MONGO_DB=db_name)
    db = _db(mongo_url, db_name)
    return db, list(db.runs.find()), proc, tmp


def test_run_document_config_status_and_host(distilled):
    db, runs, proc, tmp = distilled
    assert len(runs) == 1
    run = runs[0]
    assert run["experiment"]["name"] == "distill" and run["command"] == "main"
    config = run["config"]
    assert (config["T"], config["alpha_ce"], config["alpha_mlm"], config["alpha_cos"]) == (3.0, 5.0, 2.0, 0.5)
    assert config["student"]["layers"] == "alternate" and config["teacher"] == "random-tiny"
    assert config["max_steps"] == 8 and config["log_every"] == 2 and config["masking"]["mlm_probability"] == 0.15
    assert run["meta"]["named_configs"] == ["smoke"]
    assert run["host"]["hostname"] and run["host"]["python_version"] and run["host"]["cpu"]
    assert run["start_time"] < run["stop_time"]
    assert "distill.py" in [name for name, _ in run["experiment"]["sources"]]
    assert f'Started run with ID "{run["_id"]}"' in proc.stderr
    assert not (tmp / "runs" / "pending").exists() or not any((tmp / "runs" / "pending").iterdir())


def test_metric_series_per_loss_term(distilled):
    db, runs, _, _ = distilled
    assert_complete_run(db, runs[0], logged_steps=[2, 4, 6, 8])
    for name in LOSS_TERMS:
        values = db.metrics.find_one({"run_id": runs[0]["_id"], "name": name})["values"]
        assert all(v == v and v >= 0 for v in values), (name, values)  # finite, non-negative losses


def test_student_location_and_artifacts(distilled):
    db, runs, _, _ = distilled
    run = runs[0]
    student_dir = Path(run["info"]["student_dir"])
    assert run["result"]["student_dir"] == str(student_dir)
    assert (student_dir / "config.json").is_file()  # the recorded location holds the student
    fs = gridfs.GridFS(db)
    stored = {a["name"]: fs.get(a["file_id"]).read() for a in run["artifacts"]}
    assert stored["student_config.json"] == (student_dir / "config.json").read_bytes()
    # every logged point as the run wrote it; the weights stay in the folder (docs/tracking.md)
    assert stored["metrics.jsonl"] == (student_dir.parent / "metrics.jsonl").read_bytes()
    assert not any(name.endswith(".safetensors") for name in stored)


# --------------------------------------------------------------------------- no database at all: files


def test_fallback_to_file_storage_and_import(tmp_path, mongo_url, db_name):
    proc = run_distill(tmp_path, "max_steps=4", "log_every=1",
                       KD_SECANTUS_BIN=str(tmp_path / "missing" / "secantusd-py"))
    storage = tmp_path / "runs" / "file_storage"
    assert "NO DATABASE" in proc.stderr and f"import_runs {storage}" in proc.stderr
    assert (storage / "1" / "run.json").is_file() and (storage / "1" / "student_config.json").is_file()

    command = [sys.executable, "-m", "kd_plugin.tracking.import_runs", str(storage), "--url", mongo_url, "--db", db_name]
    first = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "imported" in first.stdout, first.stdout + first.stderr
    again = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "updated" in again.stdout, again.stdout + again.stderr

    db = _db(mongo_url, db_name)
    (run,) = list(db.runs.find())  # imported twice, stored once
    assert_complete_run(db, run, logged_steps=[1, 2, 3, 4])
    assert db.metrics.count_documents({}) == len(ALL_SERIES)
    assert db.fs.files.count_documents({"filename": {"$regex": "^artifact://"}}) == len(run["artifacts"])
    assert run["config"]["alpha_ce"] == 5.0 and run["captured_out"]
    assert run["kd_tracking"]["imported_from"] == str((storage / "1").resolve())
    # the student's card cites the file-storage run so that the imported record can be found from it
    card = (Path(run["info"]["student_dir"]) / "README.md").read_text()
    assert f"whose `kd_tracking.imported_from` is `{run['kd_tracking']['imported_from']}`" in card
    assert db.runs.find_one({"kd_tracking.imported_from": run["kd_tracking"]["imported_from"]})["_id"] == run["_id"]


# ------------------------------------------------------------------ the database goes away mid-run


def test_database_stopped_mid_run_then_restarted(tmp_path, db_name):
    """Stop the server once the run and its first metrics are stored; restart it on the same data and port a
    few seconds later. Training goes on, and in the end the database holds the complete record."""
    data_dir = tmp_path / "db"
    server = embedded_db.ensure_embedded_server(data_dir)
    steps = 20
    proc = subprocess.Popen(
        distill_command(tmp_path / "out", f"max_steps={steps}", "log_every=1", beat_interval=1),
        env=distill_env(tmp_path, KD_MONGO_URL=server.url, KD_MONGO_DB=db_name, KD_TRACKING_FINAL_WAIT="300"),
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        db = _db(server.url, db_name)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while db.metrics.find_one({"name": "loss"}) is None:  # the run document and a first metric point
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never stored a metric"
            time.sleep(0.2)
        run = db.runs.find_one()
        assert run["status"] == "RUNNING"
        db.client.close()

        assert embedded_db.stop_embedded_server(data_dir)
        time.sleep(5)
        assert proc.poll() is None  # training did not stop with the database
        restarted = embedded_db.ensure_embedded_server(data_dir, port=server.port)
        assert restarted.url == server.url and restarted.started

        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        embedded_db.stop_embedded_server(data_dir)

    assert "cannot write to" in err and "is reachable again" in err
    # read from a fresh server on the same data: everything is persisted, not just in memory
    server = embedded_db.ensure_embedded_server(data_dir)
    try:
        db = _db(server.url, db_name)
        (final,) = list(db.runs.find())
        assert final["_id"] == run["_id"]
        assert_complete_run(db, final, logged_steps=list(range(1, steps + 1)))
        assert db.metrics.count_documents({}) == len(ALL_SERIES)
    finally:
        db.client.close()
        embedded_db.stop_embedded_server(data_dir)
    pending = tmp_path / "runs" / "pending"
    assert not pending.exists() or not any(pending.iterdir())  # the journal was removed once written


# ---------------------------------------------------------------------------------------- concurrency


def test_eight_runs_at_once_get_eight_complete_records(tmp_path, mongo_url, db_name):
    n = 8
    procs = [
        subprocess.Popen(
            distill_command(tmp_path / f"out{i}", "max_steps=2", "log_every=1", f"seed={i}"),
            env=distill_env(tmp_path, KD_MONGO_URL=mongo_url, KD_MONGO_DB=db_name),
            cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i in range(n)
    ]
    try:
        errors = [p.communicate(timeout=RUN_TIMEOUT_S)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * n, [e[-2000:] for e in errors]

    db = _db(mongo_url, db_name)
    runs = list(db.runs.find())
    assert sorted(r["_id"] for r in runs) == list(range(1, n + 1))  # distinct ids, none lost
    assert sorted(r["config"]["seed"] for r in runs) == list(range(n))
    assert len({r["kd_tracking"]["run_key"] for r in runs}) == n
    for run in runs:
        assert_complete_run(db, run, logged_steps=[1, 2])
    assert db.metrics.count_documents({}) == n * len(ALL_SERIES)
