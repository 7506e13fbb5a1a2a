"""SIGHUP (a terminal or ssh session that closes), a journal that cannot be written, URLs that cannot be parsed,
and the embedded database's access control, each through the real command line and the real SecantusDB."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import OperationFailure
from sacred import Experiment

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.launch import LaunchInfo
from kd_plugin.runtime.ports import free_port
from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.sacred_experiment import configure_experiment
from tests.distill_runner import LEARNING_SMOKE, PROJECT, read_metrics, run_env

DISTILL = str(PROJECT / "experiments" / "distill.py")
LONG = [*LEARNING_SMOKE, "max_steps=400", "log_every=1", "eval_max_sequences=0"]
SECRET = "SECRET-7f3a"  # a password fragment that must never be shown


@pytest.fixture
def db(mongo_url):
    name = f"kd_signals_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def records(db) -> list[dict]:
    return list(pymongo.MongoClient(db[0])[db[1]]["runs"].find({}, {"status": 1, "captured_out": 1}))


def start(script: str, updates: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen([sys.executable, script, "with", *updates], env=env, cwd=PROJECT,
                            **(popen or streams))


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            out = proc.communicate()[1] if proc.stderr else ""
            raise AssertionError(f"the process ended before {what}: {(out or '')[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.1)


def steps_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on: the database is away
        s.bind(("127.0.0.1", 0))
        return f"mongodb://127.0.0.1:{s.getsockname()[1]}"


# ------------------------------------------------------------------------------------------------ SIGHUP


def test_sighup_mid_training_checkpoints_marks_interrupted_and_prints_the_resume_command(tmp_path, db):
    out = tmp_path / "run"
    proc = start(DISTILL, [*LONG, f"output_dir={out}"], run_env(*db))
    wait_until(lambda: steps_logged(out) >= 3, proc, "step 3")
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 129, stderr[-3000:]  # 128 + SIGHUP, like 143 for SIGTERM
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted by SIGHUP")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    step = int(re.search(r"at step (\d+) of 400; checkpoint in ", lines[0]).group(1))
    assert lines[0].endswith(f"resume={out / 'checkpoints'} output_dir={out}")
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step{step:08d}"
    assert [m["step"] for m in read_metrics(out)] == list(range(1, step + 1))
    assert [r["status"] for r in records(db)] == ["INTERRUPTED"]


def test_a_terminal_that_closes_mid_training_leaves_a_checkpoint_and_an_interrupted_record(tmp_path, db):
    """The real thing: the run's controlling terminal goes away (the kernel sends SIGHUP, and every later write
    to the terminal fails with EIO)."""
    out = tmp_path / "run"
    master, slave = pty.openpty()
    proc = start(DISTILL, [*LONG, "progress_bar=True", f"output_dir={out}"], run_env(*db), stdin=slave,
                 stdout=slave, stderr=slave, start_new_session=True,
                 preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the pty is its controlling terminal
    os.close(slave)
    hang_up, shown = threading.Event(), bytearray()

    def terminal() -> None:  # reads what the run shows, until the terminal is closed
        while not hang_up.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    shown.extend(os.read(master, 65536))
                except OSError:
                    break
        os.close(master)  # the last reference: the kernel hangs the terminal up now

    reader = threading.Thread(target=terminal, daemon=True)
    reader.start()
    try:
        wait_until(lambda: steps_logged(out) >= 3, proc, "step 3")
    finally:
        hang_up.set()
        reader.join()
    assert proc.wait(timeout=300) == 129, shown[-3000:].decode(errors="replace")
    step = steps_logged(out)
    assert step < 400 and (out / "checkpoints" / "latest").read_text().strip() == f"step{step:08d}"
    assert [r["status"] for r in records(db)] == ["INTERRUPTED"]


def test_sighup_outside_the_training_loop_is_recorded_interrupted(tmp_path, db):
    out = tmp_path / "run"
    proc = start(DISTILL, [*LONG, f"output_dir={out}"], run_env(*db))
    wait_until(lambda: records(db), proc, "a run record")  # the run has started: models and data are loading
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 129 and "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"^interrupted by SIGHUP outside the training loop", stderr, re.M), stderr[-3000:]
    assert steps_logged(out) == 0 and not (out / "checkpoints" / "latest").exists()
    assert [r["status"] for r in records(db)] == ["INTERRUPTED"]


@pytest.mark.parametrize("script, updates", [
    ("finetune.py", ["smoke", "epochs=50"]),
    ("prepare_teacher.py", ["smoke", "steps=5000", "progress_bar=False"]),
])
def test_finetune_and_prepare_teacher_record_sighup_as_interrupted(tmp_path, db, script, updates):
    """Both used to be killed outright by SIGHUP, as by SIGTERM (the record stayed RUNNING, later marked as died)."""
    proc = start(str(PROJECT / "experiments" / script), [*updates, f"output_dir={tmp_path / 'out'}"], run_env(*db))
    wait_until(lambda: records(db), proc, "a run record")
    time.sleep(1.0)  # well inside the run
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 129 and "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"^interrupted by SIGHUP: stopped at once; nothing to resume: run it again$", stderr, re.M)
    assert [r["status"] for r in records(db)] == ["INTERRUPTED"]


def test_sighup_to_a_sweep_stops_its_runs_as_interrupted(tmp_path, db):
    updates = ["smoke", "progress_bar=False", "max_steps=400", "log_every=1", "eval_max_sequences=0"]
    proc = subprocess.Popen([sys.executable, str(PROJECT / "experiments" / "sweep.py"), *updates, "--seeds", "1",
                             "--variants", "full", "--output-root", str(tmp_path / "sweep")],
                            env=run_env(*db), cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "sweep" / "full-seed1"
    wait_until(lambda: steps_logged(run_dir) >= 2, proc, "the run's step 2")
    proc.send_signal(signal.SIGHUP)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]  # like Ctrl-C / SIGTERM to a sweep
    assert "[sweep] interrupted: stopping the running runs" in stdout
    assert [r["status"] for r in records(db)] == ["INTERRUPTED"]  # the run got the forwarded SIGINT
    assert (run_dir / "checkpoints" / "latest").exists()


# --------------------------------------------------------------------------- a journal that cannot be written


def test_an_unwritable_journal_folder_is_refused_before_compute(tmp_path):
    runs = tmp_path / "runs"
    runs.write_text("a file where the runs folder should be")  # unwritable for root too
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, DISTILL, "with", "smoke", f"output_dir={out}"], cwd=PROJECT,
                          env={**run_env(dead_url(), "kd_journal"), "KD_RUNS_DIR": str(runs),
                               "KD_TRACKING_FINAL_WAIT": "0"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("configuration error:")]
    assert line.startswith(f"configuration error: KD_RUNS_DIR: {runs / 'pending'} cannot be written")
    assert "Traceback" not in proc.stderr and "saved" not in proc.stderr and not out.exists()  # no compute


def test_an_unwritable_file_storage_folder_is_refused_before_compute(tmp_path):
    """No database at all (the embedded server cannot start): the runs would go to KD_RUNS_DIR/file_storage."""
    runs = tmp_path / "runs"
    runs.write_text("a file")
    env = {k: v for k, v in run_env().items() if not k.startswith("KD_")}
    env.update(KD_RUNS_DIR=str(runs), KD_DB_DIR=str(tmp_path / "db"), KD_SECANTUS_BIN=str(tmp_path / "no-server"))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, DISTILL, "with", "smoke", f"output_dir={out}"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"configuration error: KD_RUNS_DIR: {runs / 'file_storage'} cannot be written" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_a_journal_that_fails_later_is_never_called_saved_and_the_run_exits_non_zero(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    env = {**run_env(dead_url(), "kd_journal"), "KD_RUNS_DIR": str(runs), "KD_TRACKING_FINAL_WAIT": "0"}
    proc = start(DISTILL, [*LEARNING_SMOKE, "max_steps=20", "log_every=1", "eval_max_sequences=0",
                           f"output_dir={out}"], env)
    wait_until(lambda: steps_logged(out) >= 2, proc, "step 2")
    assert any((runs / "pending").iterdir())  # the journal of the run: the database is away since its start
    shutil.rmtree(runs)
    runs.write_text("the disk filled up, say")  # from now on every journal write fails
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr[-3000:]
    assert "NOT SAVED" in stderr and "its whole record (config, status, metrics, artifacts) is lost" in stderr
    assert "is saved in" not in stderr and "import_runs" not in stderr, stderr[-3000:]
    assert steps_logged(out) == 20 and (out / "student" / "config.json").exists()  # training was not affected


# -------------------------------------------------------------------------------------- unparseable URLs


@pytest.mark.parametrize("where", ["KD_MONGO_URL", "tracking.mongo_url"])
def test_a_mongo_url_with_a_raw_at_sign_is_refused_without_showing_the_password(tmp_path, where):
    url = f"mongodb://alice:p@{SECRET}@127.0.0.1:1"
    env, updates = run_env(), ["smoke", f"output_dir={tmp_path / 'out'}"]
    if where == "KD_MONGO_URL":
        env["KD_MONGO_URL"] = url
    else:
        env.pop("KD_MONGO_URL", None)
        updates.append(f"tracking.mongo_url={url}")
    proc = subprocess.run([sys.executable, DISTILL, "with", *updates], cwd=PROJECT, capture_output=True, text=True,
                          env={**env, "KD_RUNS_DIR": str(tmp_path / "runs")}, timeout=600)
    assert proc.returncode == 2 and SECRET not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert (f"configuration error: {where}: mongodb://alice:***@127.0.0.1:1 is not a MongoDB URL pymongo can use"
            in proc.stderr)
    assert not (tmp_path / "out").exists()


def test_finetune_refuses_an_unparseable_distill_db_url(tmp_path, db):
    proc = subprocess.run([sys.executable, str(PROJECT / "experiments" / "finetune.py"), "with", "smoke",
                           "distill_run_id=1", f"distill_db.url=mongodb://u:x@{SECRET}@127.0.0.1:1"],
                          cwd=PROJECT, env=run_env(*db), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and SECRET not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert "configuration error: distill_db.url: mongodb://u:***@127.0.0.1:1 is not a MongoDB URL" in proc.stderr
    assert records(db) == []


def test_the_sweep_refuses_an_unparseable_mongo_url():
    proc = subprocess.run([sys.executable, str(PROJECT / "experiments" / "sweep.py"), "--seeds", "1", "--dry-run",
                           "--mongo-url", f"mongodb://u:x@{SECRET}@127.0.0.1:1"],
                          cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and SECRET not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert re.search(r"^configuration error: --mongo-url: mongodb://u:\*\*\*@127\.0\.0\.1:1 is not", proc.stderr, re.M)


def test_the_analysis_refuses_an_unparseable_url():
    from analysis.connection import open_database

    with pytest.raises(ConfigError) as err:
        open_database(url=f"mongodb://u:x@{SECRET}@127.0.0.1:1")
    assert err.value.key == "url" and SECRET not in str(err.value)


# ----------------------------------------------------------------------- the embedded database's access control


def _tiny_run(argv: list[str], monkeypatch) -> Experiment:
    monkeypatch.setattr(sys, "argv", list(argv))
    ex = Experiment("tiny", save_git_info=False)
    configure_experiment(ex, LaunchInfo(rank=0, local_rank=0, world_size=1, launched=False))

    @ex.main
    def main(_run):
        _run.log_scalar("loss", 1.0, 1)
        return 7

    return ex.run_commandline()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_database_needs_the_password_only_its_owner_can_read(tmp_path, monkeypatch):
    data_dir = tmp_path / "embedded"
    for var in ("KD_MONGO_URL", "KD_MONGO_DB", "KD_SECANTUS_BIN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KD_DB_DIR", str(data_dir))
    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path / "runs"))
    try:
        run = _tiny_run(["tiny.py"], monkeypatch)  # the default: the embedded server, started by the run
        server = embedded_db.get_running_server(data_dir)
        credentials = json.loads((data_dir / "credentials.json").read_text())
        assert _mode(data_dir / "credentials.json") == 0o600 and _mode(data_dir / "data") == 0o700
        assert _mode(data_dir / "server.log") == 0o600
        assert credentials["password"] not in (data_dir / "kd_server.json").read_text()

        with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000) as client:  # the project's clients
            assert client.kd_plugin.runs.find_one({"_id": run._id})["status"] == "COMPLETED"
        from analysis.connection import open_database

        assert open_database().runs.find_one({"_id": run._id})["result"] == 7  # a reader finds it too
        plain = f"mongodb://127.0.0.1:{server.port}"  # what any other local user could try
        with pymongo.MongoClient(plain, serverSelectionTimeoutMS=5000) as client:
            with pytest.raises(OperationFailure) as err:
                client.kd_plugin.runs.find_one()
            assert err.value.code == 13  # Unauthorized
            with pytest.raises(OperationFailure):
                client.kd_plugin.runs.insert_one({"_id": "forged"})
        wrong = f"mongodb://kd_plugin:guess@127.0.0.1:{server.port}/?authSource=admin"
        with pymongo.MongoClient(wrong, serverSelectionTimeoutMS=5000) as client:
            with pytest.raises(OperationFailure) as err:
                client.kd_plugin.runs.find_one()
            assert err.value.code == 18  # AuthenticationFailed

        status = subprocess.run([sys.executable, "-m", "kd_plugin.tracking.embedded_db", "status", "--data-dir",
                                 str(data_dir)], cwd=PROJECT, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and server.display_url in status.stdout
        assert credentials["password"] not in status.stdout + status.stderr
    finally:
        embedded_db.stop_embedded_server(data_dir)


def test_users_created_while_an_older_server_ran_without_a_password_lose_their_access(tmp_path):
    """A data directory written by an older kd_plugin (no --auth, no credentials file) in which someone made
    their own user: the next start gives it the project's user only, and keeps the runs."""
    data_dir = tmp_path / "embedded"
    server = embedded_db.ensure_embedded_server(data_dir)
    embedded_db.stop_embedded_server(data_dir)
    (data_dir / "credentials.json").unlink()  # as before this change
    port = free_port()
    old = subprocess.Popen([str(embedded_db.find_server_executable()), "--host", "127.0.0.1", "--port", str(port),
                            "--storage-path", str(server.storage_path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT, cwd=data_dir)
    try:
        with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=30_000) as client:
            client.kd_plugin.runs.insert_one({"_id": 1, "status": "COMPLETED"})
            client.admin.command("createUser", "intruder", pwd="pw", roles=["root"])
            client.other.command("createUser", "intruder2", pwd="pw", roles=["readWrite"])
    finally:
        old.terminate()
        old.wait(timeout=30)
    try:
        server = embedded_db.ensure_embedded_server(data_dir)
        with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000) as client:
            assert client.kd_plugin.runs.find_one({"_id": 1}) == {"_id": 1, "status": "COMPLETED"}
            assert [(u["db"], u["user"]) for u in client.admin["system.users"].find()] == [("admin", "kd_plugin")]
        for user, auth_db in (("intruder", "admin"), ("intruder2", "other")):
            url = f"mongodb://{user}:pw@127.0.0.1:{server.port}/?authSource={auth_db}"
            with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
                with pytest.raises(OperationFailure) as err:
                    client.kd_plugin.runs.find_one()
                assert err.value.code == 18
    finally:
        embedded_db.stop_embedded_server(data_dir)
