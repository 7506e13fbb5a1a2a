"""Which observer a run gets (configure_experiment's hooks), checked on a tiny in-process experiment."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pymongo
import pytest
from sacred import Experiment
from sacred.observers import MongoObserver

from kd_plugin.runtime.launch import LaunchInfo
from kd_plugin.tracking import embedded_db, import_runs
from kd_plugin.tracking.file_fallback import FallbackFileStorageObserver
from kd_plugin.tracking.resilient_observer import ResilientMongoObserver
from kd_plugin.tracking.sacred_experiment import configure_experiment

RANK0 = LaunchInfo(rank=0, local_rank=0, world_size=1, launched=False)


@pytest.fixture(autouse=True)
def isolated_tracking_env(tmp_path, monkeypatch):
    """No database configured; the embedded server's data and local run files in tmp dirs (never the user's);
    any embedded server started here is stopped afterwards."""
    for var in ("KD_MONGO_URL", "KD_MONGO_DB", "KD_SECANTUS_BIN", "KD_TRACKING_FINAL_WAIT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KD_DB_DIR", str(tmp_path / "embedded"))
    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path / "runs"))
    yield
    embedded_db.stop_embedded_server(tmp_path / "embedded")


def tiny(argv: list[str], monkeypatch, tmp_path: Path, launch: LaunchInfo = RANK0, fail: bool = False) -> Experiment:
    """A tiny experiment set up like experiments/distill.py, for the command line ``argv``."""
    monkeypatch.setattr(sys, "argv", list(argv))  # configure_experiment reads it (URL passwords)
    ex = Experiment("tiny", save_git_info=False)
    configure_experiment(ex, launch)
    ex.add_config({"T": 2.0, "alpha_ce": 5.0})
    artifact = tmp_path / "config.json"
    artifact.write_text("{}")

    @ex.main
    def main(_run):
        for step in (1, 2, 3):
            _run.log_scalar("loss", 1.0 / step, step)
        _run.add_artifact(str(artifact), name="student/config.json")
        if fail:
            raise RuntimeError("boom")
        return 7

    return ex


def _logged(caplog, capfd) -> str:
    """What Sacred's logger said: it logs to stderr, or into pytest's log capture when pytest set up logging."""
    return caplog.text + capfd.readouterr().err


def _runs(url: str, db_name: str) -> list[dict]:
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        return list(client[db_name].runs.find())


def test_kd_mongo_url_and_db(tmp_path, monkeypatch, mongo_url, db_name):
    monkeypatch.setenv("KD_MONGO_URL", mongo_url)
    monkeypatch.setenv("KD_MONGO_DB", db_name)
    run = tiny(["tiny.py"], monkeypatch, tmp_path).run_commandline()
    assert [type(o) for o in run.observers] == [ResilientMongoObserver]
    (stored,) = _runs(mongo_url, db_name)
    assert stored["_id"] == run._id and stored["status"] == "COMPLETED" and stored["result"] == 7
    assert not (tmp_path / "embedded").exists()  # no embedded server when a database is configured


def test_config_url_password_is_never_printed_nor_stored(tmp_path, monkeypatch, mongo_url, db_name, capfd):
    user, password = f"kd_{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex}"
    with pymongo.MongoClient(mongo_url) as admin:
        admin.admin.command("createUser", user, pwd=password, roles=["root"])
    try:
        parts = urlsplit(mongo_url)
        url = f"mongodb://{user}:{password}@{parts.hostname}:{parts.port}"
        updates = ["with", f"tracking.mongo_url={url}", f"tracking.db_name={db_name}"]
        run = tiny(["tiny.py", *updates], monkeypatch, tmp_path).run_commandline()
        assert run.status == "COMPLETED"
        tiny(["tiny.py", "print_config", *updates], monkeypatch, tmp_path).run_commandline()
    finally:
        with pymongo.MongoClient(mongo_url) as admin:
            admin.admin.command("dropUser", user)

    (stored,) = _runs(mongo_url, db_name)  # saved through the URL with credentials
    masked = f"mongodb://{user}:***@{parts.hostname}:{parts.port}"
    assert stored["config"]["tracking"] == {"mongo_url": masked, "db_name": db_name}
    assert stored["meta"]["config_updates"]["tracking"]["mongo_url"] == masked
    assert password not in json.dumps(stored, default=str)
    printed = capfd.readouterr()
    assert password not in printed.out + printed.err
    assert masked in printed.out  # print_config shows the masked URL


def test_environment_wins_over_config(tmp_path, monkeypatch, mongo_url, db_name, caplog, capfd):
    monkeypatch.setenv("KD_MONGO_URL", mongo_url)
    monkeypatch.setenv("KD_MONGO_DB", db_name)
    argv = ["tiny.py", "with", "tracking.mongo_url=mongodb://127.0.0.1:1", "tracking.db_name=elsewhere"]
    tiny(argv, monkeypatch, tmp_path).run_commandline()
    assert len(_runs(mongo_url, db_name)) == 1
    assert "tracking.mongo_url is ignored because KD_MONGO_URL is set" in _logged(caplog, capfd)


def test_sacred_m_flag_is_used_alone(tmp_path, monkeypatch, mongo_url, db_name):
    monkeypatch.setenv("KD_MONGO_URL", mongo_url)  # would add a second observer if -m were not respected
    monkeypatch.setenv("KD_MONGO_DB", db_name + "_env")
    parts = urlsplit(mongo_url)
    run = tiny(["tiny.py", "-m", f"{parts.hostname}:{parts.port}:{db_name}"], monkeypatch, tmp_path).run_commandline()
    assert [type(o) for o in run.observers] == [MongoObserver]
    assert run.observers[0].failure_dir == str(tmp_path / "runs" / "pending")  # where the importer looks
    assert len(_runs(mongo_url, db_name)) == 1 and _runs(mongo_url, db_name + "_env") == []


def test_other_ranks_attach_nothing_and_drop_observer_flags(tmp_path, monkeypatch):
    rank1 = LaunchInfo(rank=1, local_rank=1, world_size=2, launched=True)
    argv = ["tiny.py", "-m", "127.0.0.1:1:nowhere", "-F", str(tmp_path / "fs")]
    run = tiny(argv, monkeypatch, tmp_path, launch=rank1).run_commandline()
    assert run.status == "COMPLETED" and run.observers == []
    assert not (tmp_path / "fs").exists() and not (tmp_path / "embedded").exists()


def test_embedded_server_by_default(tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.INFO)
    run = tiny(["tiny.py"], monkeypatch, tmp_path).run_commandline()
    server = embedded_db.get_running_server(tmp_path / "embedded")
    assert server is not None  # started in $KD_DB_DIR, and left running for later runs
    (stored,) = _runs(server.url, "kd_plugin")
    assert stored["_id"] == run._id and stored["status"] == "COMPLETED"
    logged = _logged(caplog, capfd)
    assert str(tmp_path / "embedded") in logged and server.display_url in logged  # says where the data lives
    assert server.url not in logged  # never its password


def test_inspection_commands_and_unobserved_runs_start_nothing(tmp_path, monkeypatch):
    tiny(["tiny.py", "print_config"], monkeypatch, tmp_path).run_commandline()
    run = tiny(["tiny.py", "-u"], monkeypatch, tmp_path).run_commandline()
    assert run.observers == []
    assert not (tmp_path / "embedded").exists()


def test_file_storage_fallback_then_import(tmp_path, monkeypatch, mongo_url, db_name, capfd):
    monkeypatch.setenv("KD_SECANTUS_BIN", str(tmp_path / "missing" / "secantusd-py"))
    run = tiny(["tiny.py"], monkeypatch, tmp_path).run_commandline()
    assert [type(o) for o in run.observers] == [FallbackFileStorageObserver]
    err = capfd.readouterr().err
    storage = tmp_path / "runs" / "file_storage"
    assert "NO DATABASE" in err and f"python -m kd_plugin.tracking.import_runs {storage}" in err
    assert (storage / "1" / "student" / "config.json").is_file()  # artifact names with a directory work

    for _ in range(2):  # importing twice changes nothing
        assert import_runs.main([str(storage), "--url", mongo_url, "--db", db_name]) == 0
    (stored,) = _runs(mongo_url, db_name)
    assert stored["status"] == "COMPLETED" and stored["result"] == 7 and stored["config"]["alpha_ce"] == 5.0
    assert stored["kd_tracking"]["imported_from"] == str((storage / "1").resolve())
    with pymongo.MongoClient(mongo_url) as client:
        assert [m["steps"] for m in client[db_name].metrics.find()] == [[1, 2, 3]]
        assert client[db_name].fs.files.count_documents({"filename": {"$regex": "^artifact://"}}) == 1


def test_sacred_failure_pickle_is_imported_in_place(tmp_path, monkeypatch, mongo_url, db_name):
    class Unreachable:
        name = "runs"

        def update_one(self, *args, **kwargs):
            raise pymongo.errors.AutoReconnect("database went away")

    original = MongoObserver.failed_event

    def failed_event_without_database(self, fail_time, fail_trace):
        self.runs = Unreachable()
        original(self, fail_time, fail_trace)

    monkeypatch.setattr(MongoObserver, "failed_event", failed_event_without_database)
    parts = urlsplit(mongo_url)
    with pytest.raises(SystemExit):
        tiny(["tiny.py", "-m", f"{parts.hostname}:{parts.port}:{db_name}"], monkeypatch, tmp_path, fail=True).run_commandline()
    (before,) = _runs(mongo_url, db_name)
    assert before["status"] == "RUNNING"  # the final save never arrived
    pending = tmp_path / "runs" / "pending"
    assert len(list(pending.glob("sacred_mongo_fail_*.pickle"))) == 1

    for _ in range(2):
        assert import_runs.main([str(pending), "--url", mongo_url, "--db", db_name]) == 0
    (after,) = _runs(mongo_url, db_name)
    assert after["_id"] == before["_id"] and after["status"] == "FAILED" and "boom" in "".join(after["fail_trace"])
