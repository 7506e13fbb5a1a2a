"""Runs whose process died without a word (``kill -9``) are recorded FAILED (Sacred's own status, which Omniboard
filters and colours) with a fail trace saying they died: the rule on hand-made documents, and a real distillation
killed with SIGKILL mid-training, shown FAILED/died by the analysis and recorded so by the next run."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pymongo
import pytest
from sacred import Experiment

from analysis import load_runs
from kd_plugin.runtime.launch import LaunchInfo
from kd_plugin.tracking.dead_runs import mark_dead_runs, utc_now
from kd_plugin.tracking.resilient_observer import ResilientMongoObserver
from kd_plugin.tracking.sacred_experiment import configure_experiment
from tests.test_tracking_distill import PROJECT, RUN_TIMEOUT_S, distill_command, distill_env

RANK0 = LaunchInfo(rank=0, local_rank=0, world_size=1, launched=False)


@pytest.fixture
def database(mongo_url, db_name):
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    yield client[db_name]
    client.drop_database(db_name)
    client.close()


@pytest.fixture(autouse=True)
def default_threshold(monkeypatch):
    monkeypatch.delenv("KD_DEAD_AFTER_S", raising=False)


def _run_doc(run_id, status="RUNNING", silent_s=None, started_s_ago=1000.0, beat_interval=None, now=None):
    now = now or utc_now()
    return {
        "_id": run_id, "status": status, "experiment": {"name": "distill"}, "config": {},
        "start_time": now - dt.timedelta(seconds=started_s_ago),
        "heartbeat": None if silent_s is None else now - dt.timedelta(seconds=silent_s),
        "meta": {"options": {"--beat-interval": beat_interval}}, "info": {}, "kd_tracking": {"run_key": str(run_id)},
    }


def test_the_rule_default_threshold_and_the_runs_own_heartbeat_interval(database):
    now = utc_now()
    database.runs.insert_many([
        _run_doc(1, silent_s=61, now=now),                        # default -b 10: dead after 60 s
        _run_doc(2, silent_s=59, now=now),                        # still within 60 s
        _run_doc(3, silent_s=150, beat_interval="60", now=now),   # -b 60: dead after 3 x 60 = 180 s
        _run_doc(4, silent_s=181, beat_interval="60", now=now),
        _run_doc(5, silent_s=None, started_s_ago=120, now=now),   # killed before its first heartbeat
        _run_doc(6, status="COMPLETED", silent_s=5000, now=now),  # finished runs are never touched
        _run_doc(7, silent_s=5000, now=now),                      # the run that checks (excluded)
    ])
    assert mark_dead_runs(database, now=now, exclude=[7]) == [1, 4, 5]
    statuses = {d["_id"]: d["status"] for d in database.runs.find()}
    assert statuses == {1: "FAILED", 2: "RUNNING", 3: "RUNNING", 4: "FAILED", 5: "FAILED", 6: "COMPLETED", 7: "RUNNING"}
    one, five = database.runs.find_one({"_id": 1}), database.runs.find_one({"_id": 5})
    assert one["stop_time"] == one["heartbeat"] and five["stop_time"] == five["start_time"]  # last sign of life
    assert abs((one["kd_tracking"]["marked_dead_at"] - now).total_seconds()) < 0.01
    assert one["kd_tracking"]["dead_after_s"] == 60.0 and one["kd_tracking"]["run_key"] == "1"
    assert one["kd_tracking"]["died"] is True and len(one["fail_trace"]) == 1
    assert one["fail_trace"][0].startswith("kd_plugin: the process stopped without a word on ")
    assert f"no heartbeat since {one['heartbeat']:%Y-%m-%d %H:%M:%S} UTC" in one["fail_trace"][0]
    assert database.runs.find_one({"_id": 4})["kd_tracking"]["dead_after_s"] == 180.0
    assert mark_dead_runs(database, now=now) == [7]  # idempotent: only the newly dead


def test_kd_dead_after_s_overrides_the_threshold(database, monkeypatch):
    now = utc_now()
    database.runs.insert_many([_run_doc(1, silent_s=4, now=now), _run_doc(2, silent_s=2, now=now)])
    monkeypatch.setenv("KD_DEAD_AFTER_S", "3")
    assert mark_dead_runs(database, now=now) == [1]


def test_a_run_marked_by_mistake_repairs_itself(tmp_path, mongo_url, database):
    """A run cut off from the database for longer than the threshold may be marked as died by another run; its
    next heartbeat sets its document again: RUNNING, no stop time, no fail trace, no died mark."""
    ex = Experiment("alive", save_git_info=False)
    seen = []

    @ex.main
    def main(_run):
        time.sleep(0.5)  # the first heartbeats are written
        database.runs.update_one({"_id": _run._id}, {"$set": {"status": "FAILED", "stop_time": utc_now(),
                                                              "fail_trace": ["died"], "kd_tracking.died": True}})
        time.sleep(1.5)  # a heartbeat or more later
        seen.append(database.runs.find_one({"_id": _run._id}))
        return "done"

    ex.observers.append(ResilientMongoObserver(mongo_url, database.name, journal_dir=tmp_path))
    ex.run(options={"--beat-interval": "0.3"})
    assert seen[0]["status"] == "RUNNING" and "stop_time" not in seen[0] and "fail_trace" not in seen[0]
    assert "died" not in seen[0]["kd_tracking"]
    assert database.runs.find_one()["status"] == "COMPLETED"


# ------------------------------------------------------------------------- a real run killed with SIGKILL


def _next_run(monkeypatch, url: str, db_name: str):
    """A short run set up like experiments/distill.py (same hooks, same observer) on the same database."""
    monkeypatch.setattr(sys, "argv", ["tiny.py"])
    monkeypatch.setenv("KD_MONGO_URL", url)
    monkeypatch.setenv("KD_MONGO_DB", db_name)
    ex = Experiment("tiny", save_git_info=False)
    configure_experiment(ex, RANK0)

    @ex.main
    def main(_run):
        _run.log_scalar("loss", 1.0, 1)

    return ex.run_commandline()


def test_run_killed_mid_training_is_shown_then_marked_died(tmp_path, mongo_url, database, monkeypatch):
    proc = subprocess.Popen(
        distill_command(tmp_path / "out", "max_steps=400", "log_every=1", beat_interval=1),
        env=distill_env(tmp_path, KD_MONGO_URL=mongo_url, KD_MONGO_DB=database.name),
        cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:  # training: metric points and heartbeats are arriving
            loss = database.metrics.find_one({"name": "loss"})
            run = database.runs.find_one()
            if loss and len(loss["steps"]) >= 3 and run and run.get("heartbeat"):
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never stored its first points"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9: nothing more is written
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    monkeypatch.setenv("KD_DEAD_AFTER_S", "3")
    time.sleep(1.5)  # the last write of the dying process has landed
    killed = database.runs.find_one()
    assert killed["status"] == "RUNNING"  # Sacred's record says nothing happened
    time.sleep(max(0.0, 3.5 - (utc_now() - killed["heartbeat"]).total_seconds()))

    # the analysis shows it FAILED, died (stop time = last heartbeat) without writing anything
    shown = load_runs(db=database, metrics=False, downstream=False)
    assert shown.loc[killed["_id"], "status"] == "FAILED" and shown.loc[killed["_id"], "died"]
    assert shown.loc[killed["_id"], "stop_time"] == killed["heartbeat"]
    assert list(load_runs(db=database, status="DIED", metrics=False).index) == [killed["_id"]]
    assert load_runs(db=database, status="RUNNING", metrics=False).empty
    assert database.runs.find_one({"_id": killed["_id"]})["status"] == "RUNNING"

    # the next run of any experiment marks it in the database
    nxt = _next_run(monkeypatch, mongo_url, database.name)
    assert nxt.status == "COMPLETED" and nxt._id != killed["_id"]
    died = database.runs.find_one({"_id": killed["_id"]})
    assert died["status"] == "FAILED" and died["stop_time"] == killed["heartbeat"] and died["kd_tracking"]["died"]
    assert killed["host"]["hostname"] in died["fail_trace"][0]
    assert died["kd_tracking"]["dead_after_s"] == 3.0
    assert died["kd_tracking"]["marked_dead_at"] > killed["heartbeat"]
    assert died["kd_tracking"]["run_key"] == killed["kd_tracking"]["run_key"]  # the rest is untouched
    assert database.metrics.find_one({"run_id": killed["_id"], "name": "loss"})["steps"][:3] == [1, 2, 3]
    assert database.runs.find_one({"_id": nxt._id})["status"] == "COMPLETED"
    assert load_runs(db=database, experiment=None, metrics=False).loc[killed["_id"], "status"] == "FAILED"
    assert list(load_runs(db=database, status="DIED", experiment=None, metrics=False).index) == [killed["_id"]]


def test_importing_the_files_of_a_killed_run_marks_it_died(tmp_path, mongo_url, database, monkeypatch):
    """Sacred's file storage of a killed process says RUNNING forever: imported, it is DIED, not alive."""
    import shutil

    from sacred.observers import FileStorageObserver

    from kd_plugin.tracking import import_runs

    storage, snapshot = tmp_path / "storage", tmp_path / "killed"
    ex = Experiment("tiny", save_git_info=False)
    ex.observers.append(FileStorageObserver(str(storage)))

    @ex.main
    def main(_run):
        time.sleep(0.2)
        shutil.copytree(storage, snapshot)  # what `kill -9` at this moment leaves on disk

    ex.run()
    assert '"status": "RUNNING"' in (snapshot / "1" / "run.json").read_text()
    monkeypatch.setenv("KD_DEAD_AFTER_S", "1")
    time.sleep(1.5)
    assert import_runs.main([str(snapshot), "--url", mongo_url, "--db", database.name]) == 0
    (imported,) = database.runs.find()
    assert imported["status"] == "FAILED" and imported["kd_tracking"]["died"]
    assert imported["stop_time"] == (imported.get("heartbeat") or imported["start_time"])
    assert imported["kd_tracking"]["dead_after_s"] == 1.0
