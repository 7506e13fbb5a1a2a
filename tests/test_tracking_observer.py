"""ResilientMongoObserver on a tiny in-process Sacred experiment, checked by reading the database."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import bson
import gridfs
import pymongo
import pytest
from sacred import Experiment
from sacred.observers import MongoObserver

import kd_plugin.tracking.sacred_experiment  # noqa: F401 -- the experiments' Sacred settings (capture mode "sys")
from kd_plugin.tracking import embedded_db, import_runs
from kd_plugin.tracking.journal import Journal
from kd_plugin.tracking.output_budget import DEFAULT_MAX_BYTES, filter_captured_output
from kd_plugin.tracking.resilient_observer import ResilientMongoObserver

LOSSES = ("loss", "loss_ce", "loss_mlm", "loss_cos")


def tiny_experiment(tmp_path: Path, n_points: int = 5, print_lines: int = 0) -> Experiment:
    """Logs ``n_points`` points of each loss term, prints ``print_lines`` long lines, adds one artifact."""
    ex = Experiment("tiny", save_git_info=False)
    ex.captured_out_filter = filter_captured_output
    ex.add_config({"seed": 42, "T": 2.0, "alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "student": {"layers": "alternate"}})
    artifact = tmp_path / "config.json"
    artifact.write_text('{"dim": 32}')

    @ex.main
    def main(_run):
        for step in range(1, n_points + 1):
            for name in LOSSES:
                _run.log_scalar(name, 1.0 / step, step)
        for i in range(print_lines):
            print(f"output line {i} " + "y" * 200)
        _run.info["student_dir"] = str(tmp_path)
        _run.add_artifact(str(artifact), name="student/config.json")
        return {"final_loss": 1.0 / n_points}

    return ex


def _client(url: str) -> pymongo.MongoClient:
    return pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"mongodb://127.0.0.1:{s.getsockname()[1]}"


def test_documents_have_the_structure_sacred_mongo_observer_writes(tmp_path, mongo_url, db_name):
    reference = tiny_experiment(tmp_path)
    reference.observers.append(MongoObserver(mongo_url, db_name=db_name + "_ref"))
    reference.run()
    ours = tiny_experiment(tmp_path)
    ours.observers.append(ResilientMongoObserver(mongo_url, db_name, journal_dir=tmp_path / "pending"))
    run = ours.run()

    with _client(mongo_url) as client:
        ref_db, db = client[db_name + "_ref"], client[db_name]
        ref_run, our_run = ref_db.runs.find_one(), db.runs.find_one()
        assert our_run["_id"] == run._id == 1
        assert set(our_run) == set(ref_run) | {"kd_tracking"}
        for key in ("experiment", "host", "meta", "info"):
            assert set(our_run[key]) == set(ref_run[key]), key
        assert our_run["config"] == ref_run["config"]
        assert our_run["status"] == ref_run["status"] == "COMPLETED"
        assert our_run["result"] == ref_run["result"]
        assert {m["name"] for m in our_run["info"]["metrics"]} == {m["name"] for m in ref_run["info"]["metrics"]}

        for name in LOSSES:
            ref_series = ref_db.metrics.find_one({"run_id": ref_run["_id"], "name": name})
            series = db.metrics.find_one({"run_id": our_run["_id"], "name": name})
            assert set(series) == set(ref_series)
            assert series["steps"] == ref_series["steps"] == [1, 2, 3, 4, 5]
            assert series["values"] == ref_series["values"]
            assert str(series["_id"]) in {m["id"] for m in our_run["info"]["metrics"]}

        # sources and artifacts in GridFS, referenced the same way
        assert [name for name, _ in our_run["experiment"]["sources"]] == [n for n, _ in ref_run["experiment"]["sources"]]
        fs = gridfs.GridFS(db)
        for _, file_id in our_run["experiment"]["sources"]:
            assert fs.exists(file_id)
        assert [a["name"] for a in our_run["artifacts"]] == [a["name"] for a in ref_run["artifacts"]]
        stored = fs.get(our_run["artifacts"][0]["file_id"])
        assert stored.filename == "artifact://runs/1/student/config.json" and stored.read() == b'{"dim": 32}'
        assert stored.content_type == gridfs.GridFS(ref_db).get(ref_run["artifacts"][0]["file_id"]).content_type


def test_metric_series_are_capped_with_a_note_in_info(tmp_path, mongo_url, db_name):
    ex = tiny_experiment(tmp_path, n_points=1000)
    ex.observers.append(ResilientMongoObserver(mongo_url, db_name, journal_dir=tmp_path, max_metric_points=50))
    ex.run()
    with _client(mongo_url) as client:
        run = client[db_name].runs.find_one()
        for name in LOSSES:
            series = client[db_name].metrics.find_one({"name": name})
            assert len(series["steps"]) <= 51
            assert series["steps"][0] == 1 and series["steps"][-1] == 1000  # spans the run, final value kept
            assert len(series["steps"]) == len(series["values"]) == len(series["timestamps"])
            note = run["info"]["metrics_thinned"][name]
            assert note["logged"] == 1000 and note["stored"] == len(series["steps"]) and note["kept_every"] > 1


def test_captured_output_is_bounded(tmp_path, mongo_url, db_name):
    ex = tiny_experiment(tmp_path, print_lines=40_000)  # about 8.5 MB of output
    ex.observers.append(ResilientMongoObserver(mongo_url, db_name, journal_dir=tmp_path))
    ex.run()
    with _client(mongo_url) as client:
        run = client[db_name].runs.find_one()
    out = run["captured_out"]
    assert len(out.encode()) <= DEFAULT_MAX_BYTES
    assert "output line 0 " in out and "output line 39999 " in out
    assert "bytes of captured output cut here" in out
    assert len(bson.encode(run)) < 2 * DEFAULT_MAX_BYTES
    assert run["status"] == "COMPLETED"


def test_database_away_for_the_whole_run_leaves_an_importable_journal(tmp_path, mongo_url, db_name, capfd):
    pending = tmp_path / "pending"
    ex = tiny_experiment(tmp_path)
    ex.observers.append(ResilientMongoObserver(_dead_url(), db_name, journal_dir=pending, timeout_ms=300, final_wait=0.5))
    run = ex.run()  # the run itself is not disturbed
    assert run.status == "COMPLETED" and run.result == {"final_loss": 0.2}
    journals = list(pending.iterdir())
    assert len(journals) == 1 and (journals[0] / "record.json").is_file()
    err = capfd.readouterr().err
    assert "cannot write to mongodb://127.0.0.1" in err
    assert f"python -m kd_plugin.tracking.import_runs {journals[0]} --db {db_name}" in err

    assert import_runs.main([str(pending), "--url", mongo_url]) == 0  # the database name comes from the journal
    assert not journals[0].exists()  # imported journals are removed
    with _client(mongo_url) as client:
        db = client[db_name]
        stored = db.runs.find_one()
        assert stored["status"] == "COMPLETED" and stored["result"] == {"final_loss": 0.2}
        assert stored["config"]["alpha_ce"] == 5.0
        assert {m["name"] for m in stored["info"]["metrics"]} == set(LOSSES)
        for name in LOSSES:
            assert db.metrics.find_one({"run_id": stored["_id"], "name": name})["steps"] == [1, 2, 3, 4, 5]
        assert gridfs.GridFS(db).get(stored["artifacts"][0]["file_id"]).read() == b'{"dim": 32}'
        assert stored["experiment"]["sources"] and gridfs.GridFS(db).exists(stored["experiment"]["sources"][0][1])


def test_run_document_never_contains_a_password(tmp_path, mongo_url, db_name):
    ex = tiny_experiment(tmp_path)
    ex.add_config({"somewhere": {"url": "mongodb://alice:hunter2@db.example:27017"}})
    ex.observers.append(ResilientMongoObserver(mongo_url, db_name, journal_dir=tmp_path))
    ex.run()
    with _client(mongo_url) as client:
        run = client[db_name].runs.find_one()
    assert run["config"]["somewhere"]["url"] == "mongodb://alice:***@db.example:27017"
    assert "hunter2" not in json.dumps(run, default=str)


@pytest.mark.parametrize("status", ["FAILED"])
def test_failed_run_is_recorded_with_its_trace(tmp_path, mongo_url, db_name, status):
    ex = Experiment("crash", save_git_info=False)

    @ex.main
    def main(_run):
        _run.log_scalar("loss", 1.0, 1)
        raise RuntimeError("boom")

    ex.observers.append(ResilientMongoObserver(mongo_url, db_name, journal_dir=tmp_path))
    with pytest.raises(RuntimeError):
        ex.run()
    with _client(mongo_url) as client:
        run = client[db_name].runs.find_one()
        assert run["status"] == status and "boom" in "".join(run["fail_trace"])
        assert client[db_name].metrics.find_one({"name": "loss"})["steps"] == [1]


def test_server_stopped_and_restarted_during_the_run(tmp_path, db_name, capfd):
    """Fast in-process version of the real outage test (test_tracking_distill): points logged while the
    server is down are journalled, and written once it is back."""
    data_dir, journal_dir = tmp_path / "db", tmp_path / "pending"
    server = embedded_db.ensure_embedded_server(data_dir)
    ex = Experiment("outage", save_git_info=False)
    journal_seen = []

    @ex.main
    def main(_run):
        def log(steps):
            for step in steps:
                _run.log_scalar("loss", 1.0 / step, step)
                time.sleep(0.02)

        log(range(1, 6))
        time.sleep(1.0)  # a heartbeat writes them
        embedded_db.stop_embedded_server(data_dir)
        log(range(6, 11))
        time.sleep(2.0)  # heartbeats fail: the points wait in memory and in the journal
        journal_seen.append(any(journal_dir.glob("*/record.json")))
        embedded_db.ensure_embedded_server(data_dir, port=server.port)
        log(range(11, 16))
        return "done"

    ex.observers.append(ResilientMongoObserver(server.url, db_name, journal_dir=journal_dir, timeout_ms=500))
    try:
        ex.run(options={"--beat-interval": "0.3"})
        with _client(server.url) as client:
            run = client[db_name].runs.find_one()
            assert run["status"] == "COMPLETED" and run["result"] == "done"
            assert client[db_name].metrics.find_one({"name": "loss"})["steps"] == list(range(1, 16))
    finally:
        embedded_db.stop_embedded_server(data_dir)
    assert journal_seen == [True] and not any(journal_dir.glob("*/record.json"))
    err = capfd.readouterr().err
    assert "cannot write to" in err and "is reachable again" in err


def test_resumed_run_links_back_through_an_outage_and_imports_keep_the_link(tmp_path, mongo_url, db_name, capfd):
    """The resumed run's link to the earlier run waits in its journal while the database is away; writing the
    earlier run's record again later (an imported journal) keeps the link."""
    first_ex = tiny_experiment(tmp_path)
    first_observer = ResilientMongoObserver(mongo_url, db_name, journal_dir=tmp_path / "pending")
    first_ex.observers.append(first_observer)
    first = first_ex.run()
    Journal(tmp_path / "later" / "first").write(first_observer.record)  # as if its last write had missed the database

    ex = Experiment("resumed", save_git_info=False)

    @ex.main
    def main(_run):
        _run.info["resumed_from_run"] = first._id
        _run.info["resumed_from"] = {"path": "/ckpt", "step": 3, "run_id": first._id}
        _run.log_scalar("loss", 0.5, 4)

    pending = tmp_path / "pending"
    ex.observers.append(ResilientMongoObserver(_dead_url(), db_name, journal_dir=pending, timeout_ms=300, final_wait=0.5))
    ex.run()
    with _client(mongo_url) as client:
        assert "resumed_by_run" not in client[db_name].runs.find_one({"_id": first._id})["info"]
    assert import_runs.main([str(pending), "--url", mongo_url]) == 0
    assert import_runs.main([str(tmp_path / "later"), "--url", mongo_url]) == 0
    with _client(mongo_url) as client:
        runs = {run["_id"]: run for run in client[db_name].runs.find()}
    (resumed_id,) = set(runs) - {first._id}
    assert runs[first._id]["info"]["resumed_by_run"] == resumed_id and runs[first._id]["status"] == "COMPLETED"
    assert runs[resumed_id]["info"]["resumed_from_run"] == first._id
    assert "notes" not in runs[resumed_id]["kd_tracking"]
