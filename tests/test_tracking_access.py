"""Credentials the database refuses stop a run before training; an unreachable database does not.

Real authentication: SecantusDB supports SCRAM-SHA-256 users (``secantusd-py --auth``). The fixture provisions
users on a server without auth, then restarts it on the same data with ``--auth``; the runs connect to it the way
users do (``KD_MONGO_URL``, ``tracking.mongo_url``).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
import pytest
from sacred import Experiment

from kd_plugin.runtime.launch import LaunchInfo
from kd_plugin.runtime.ports import free_port
from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.resilient_observer import ResilientMongoObserver
from kd_plugin.tracking.sacred_experiment import configure_experiment
from tests.test_tracking_distill import PROJECT, distill_command, distill_env

PASSWORD = f"pw-{uuid.uuid4().hex}"  # the right one; never printed
WRONG = f"wrong-{uuid.uuid4().hex}"
DB = "kd_auth"
RANK0 = LaunchInfo(rank=0, local_rank=0, world_size=1, launched=False)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``host:port`` of a SecantusDB server that requires authentication, with users ``alice`` (root) and
    ``reader`` (may read database kd_auth, not write)."""
    data_dir = tmp_path_factory.mktemp("auth_db")
    server = embedded_db.ensure_embedded_server(data_dir)
    with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000) as client:
        client.admin.command("createUser", "alice", pwd=PASSWORD, roles=["root"])
        client.admin.command("createUser", "reader", pwd=PASSWORD, roles=[{"role": "read", "db": DB}])
    assert embedded_db.stop_embedded_server(data_dir)
    port = free_port()
    with open(data_dir / "auth.log", "wb") as log:
        proc = subprocess.Popen(
            [str(embedded_db.find_server_executable()), "--host", "127.0.0.1", "--port", str(port),
             "--storage-path", str(data_dir / embedded_db.STORAGE_DIR_NAME), "--auth"],
            stdout=log, stderr=subprocess.STDOUT, cwd=data_dir,
        )
    try:
        admin = f"mongodb://alice:{PASSWORD}@127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with pymongo.MongoClient(admin, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                assert proc.poll() is None and time.monotonic() < deadline, (data_dir / "auth.log").read_text()
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _stored_runs(hostport: str) -> list[dict]:
    with pymongo.MongoClient(f"mongodb://alice:{PASSWORD}@{hostport}", serverSelectionTimeoutMS=5000) as client:
        return list(client[DB].runs.find())


def _tiny(argv: list[str], monkeypatch, ran: list | None = None) -> Experiment:
    """A tiny experiment set up like experiments/distill.py (same hooks, same observer); its main function
    appends to ``ran``."""
    monkeypatch.setattr(sys, "argv", list(argv))
    ex = Experiment("tiny", save_git_info=False)
    configure_experiment(ex, RANK0)

    @ex.main
    def main(_run):
        if ran is not None:
            ran.append(True)
        _run.log_scalar("loss", 1.0, 1)
        return 7

    return ex


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    for var in ("KD_MONGO_URL", "KD_MONGO_DB", "KD_SECANTUS_BIN", "KD_TRACKING_FINAL_WAIT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KD_DB_DIR", str(tmp_path / "embedded"))
    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


def _nothing_left_locally(tmp: Path) -> None:
    runs = tmp / "runs"
    assert not runs.exists() or not any(runs.rglob("*.json")), list(runs.rglob("*"))  # no journal, no files
    assert not (tmp / "embedded").exists()  # no fallback to the embedded server either


def test_wrong_password_stops_the_real_command_line_with_one_line(tmp_path, auth_server):
    url = f"mongodb://alice:{WRONG}@{auth_server}"
    proc = subprocess.run(distill_command(tmp_path / "out", "max_steps=2"),
                          env=distill_env(tmp_path, KD_MONGO_URL=url, KD_MONGO_DB=DB),
                          cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("configuration error:")]
    assert errors == [
        f"configuration error: KD_MONGO_URL: mongodb://alice:***@{auth_server} refused the credentials of user "
        "'alice' (AuthenticationFailed: authentication failed); allowed: a user name and password that this "
        "database accepts (add ?authSource=DB when the user is defined in another database)"
    ], proc.stderr[-3000:]
    assert WRONG not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Started run" not in proc.stderr  # stopped before the run
    assert not (tmp_path / "out").exists()  # no training
    assert _stored_runs(auth_server) == []
    _nothing_left_locally(tmp_path)


def test_config_url_with_wrong_password_names_tracking_mongo_url(isolated, monkeypatch, auth_server, capfd):
    argv = ["tiny.py", "with", f"tracking.mongo_url=mongodb://alice:{WRONG}@{auth_server}", f"tracking.db_name={DB}"]
    with pytest.raises(SystemExit) as stop:
        _tiny(argv, monkeypatch).run_commandline()
    assert stop.value.code == 2
    err = capfd.readouterr().err
    assert f"configuration error: tracking.mongo_url: mongodb://alice:***@{auth_server} refused the credentials of " \
           "user 'alice'" in err
    assert WRONG not in err
    assert _stored_runs(auth_server) == []
    _nothing_left_locally(isolated)


def test_no_user_for_a_server_that_requires_one(isolated, monkeypatch, auth_server, capfd):
    monkeypatch.setenv("KD_MONGO_URL", f"mongodb://{auth_server}")
    monkeypatch.setenv("KD_MONGO_DB", DB)
    with pytest.raises(SystemExit) as stop:
        _tiny(["tiny.py"], monkeypatch).run_commandline()
    assert stop.value.code == 2
    assert (f"configuration error: KD_MONGO_URL: mongodb://{auth_server} requires authentication and the URL names "
            "no user (Unauthorized: ") in capfd.readouterr().err
    _nothing_left_locally(isolated)


def test_user_who_may_not_write_is_stopped_at_the_first_write(isolated, monkeypatch, auth_server, capfd):
    """``reader`` passes the first-contact check (a read) and is refused at the run's first write: the run still
    stops before its main function, with the same kind of line and status."""
    monkeypatch.setenv("KD_MONGO_URL", f"mongodb://reader:{PASSWORD}@{auth_server}")
    monkeypatch.setenv("KD_MONGO_DB", DB)
    ran: list = []
    with pytest.raises(SystemExit) as stop:
        _tiny(["tiny.py"], monkeypatch, ran).run_commandline()
    assert stop.value.code == 2 and ran == []
    err = capfd.readouterr().err
    assert (f"configuration error: KD_MONGO_URL: mongodb://reader:***@{auth_server} does not let user 'reader' read "
            f"and write database '{DB}' (Unauthorized: ") in err
    assert PASSWORD not in err
    assert _stored_runs(auth_server) == []
    _nothing_left_locally(isolated)


def test_accepted_credentials_record_the_run_and_the_indexes(isolated, monkeypatch, auth_server):
    monkeypatch.setenv("KD_MONGO_URL", f"mongodb://alice:{PASSWORD}@{auth_server}")
    monkeypatch.setenv("KD_MONGO_DB", DB)
    run = _tiny(["tiny.py"], monkeypatch).run_commandline()
    assert run.status == "COMPLETED" and [type(o) for o in run.observers] == [ResilientMongoObserver]
    (stored,) = _stored_runs(auth_server)
    assert stored["_id"] == run._id and stored["result"] == 7
    with pymongo.MongoClient(f"mongodb://alice:{PASSWORD}@{auth_server}") as client:
        keys = [index["key"] for index in client[DB].metrics.index_information().values()]
        client.drop_database(DB)
    assert [("run_id", 1), ("name", 1)] in keys


def test_unreachable_database_is_still_an_outage(isolated, monkeypatch, capfd):
    dead = f"mongodb://alice:{WRONG}@127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("KD_MONGO_URL", dead)
    monkeypatch.setenv("KD_TRACKING_FINAL_WAIT", "0")
    run = _tiny(["tiny.py"], monkeypatch).run_commandline()
    assert run.status == "COMPLETED" and run.result == 7  # training is not stopped
    err = capfd.readouterr().err
    assert "configuration error" not in err and "cannot write to mongodb://alice:***@127.0.0.1" in err
    assert WRONG not in err
    assert len(list((isolated / "runs" / "pending").glob("*/record.json"))) == 1  # kept for the import command


def test_missing_password_is_a_configuration_error(isolated, monkeypatch, capfd):
    monkeypatch.setenv("KD_MONGO_URL", f"mongodb://alice@127.0.0.1:{free_port()}/?authMechanism=SCRAM-SHA-256")
    with pytest.raises(SystemExit) as stop:
        _tiny(["tiny.py"], monkeypatch).run_commandline()
    assert stop.value.code == 2
    assert "configuration error: KD_MONGO_URL: pymongo cannot use the credentials of mongodb://alice@" in \
        capfd.readouterr().err
