"""A run resumed from another run's checkpoint: both records point at each other, and the analysis stitches one
curve across them. Two real distillation runs, as a user starts them (``stop_at_step``, then ``resume``)."""

from __future__ import annotations

import subprocess
import uuid

import pandas as pd
import pymongo
import pytest

from analysis import load_metrics, load_runs, resume_chain
from tests.test_tracking_distill import (
    EVAL_SERIES,
    PROJECT,
    RUN_TIMEOUT_S,
    STEP_SERIES,
    distill_command,
    distill_env,
)


@pytest.fixture(scope="module")
def resumed_pair(tmp_path_factory, mongo_url):
    """Run 1 stops at step 6 of 12 (COMPLETED, with a checkpoint at 6); run 2 resumes it to step 12."""
    tmp = tmp_path_factory.mktemp("resume")
    db_name = f"test_resume_links_{uuid.uuid4().hex[:8]}"  # module-scoped: the db_name fixture is per test
    out = tmp / "out"
    common = ["max_steps=12", "log_every=1", "checkpoint_every=4"]
    env = distill_env(tmp, KD_MONGO_URL=mongo_url, KD_MONGO_DB=db_name)
    for updates in ([*common, "stop_at_step=6"], [*common, f"resume={out}"]):
        proc = subprocess.run(distill_command(out, *updates), env=env, cwd=PROJECT, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, proc.stderr[-3000:]
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    db = client[db_name]
    first, second = db.runs.find().sort("_id", 1)
    yield db, first, second
    client.drop_database(db_name)
    client.close()


def test_both_records_point_at_each_other(resumed_pair):
    db, first, second = resumed_pair
    assert first["status"] == second["status"] == "COMPLETED"
    assert first["result"]["steps"] == 6 and second["result"]["steps"] == 12
    assert second["info"]["resumed_from_run"] == first["_id"]
    assert second["info"]["resumed_from"]["step"] == 6 and second["info"]["resumed_from"]["run_id"] == first["_id"]
    assert first["info"]["resumed_by_run"] == second["_id"]  # written by the second run into the first's record
    assert "resumed_by_run" not in second["info"] and "notes" not in second["kd_tracking"]

    runs = load_runs(db=db, metrics=False, downstream=False)
    assert runs.loc[first["_id"], "resumed_by_run"] == second["_id"] and runs["resumed_from_run"].dtype == "Int64"
    assert runs.loc[second["_id"], "resumed_from_run"] == first["_id"]
    assert pd.isna(runs.loc[first["_id"], "resumed_from_run"]) and pd.isna(runs.loc[second["_id"], "resumed_by_run"])


def test_stitched_curve_has_every_step_once_with_each_runs_values(resumed_pair):
    db, first, second = resumed_pair
    assert resume_chain(second["_id"], db=db) == [first["_id"], second["_id"]]
    assert resume_chain(first["_id"], db=db) == [first["_id"]]
    own = {(doc["run_id"], doc["name"]): dict(zip(doc["steps"], doc["values"], strict=True)) for doc in db.metrics.find()}
    assert sorted(own[(second["_id"], "loss")]) == list(range(7, 13))  # the resumed run logs from step 7 on

    curves = load_metrics([second["_id"]], db=db, follow_resumes=True, columns=[])
    assert set(curves["run_id"]) == {second["_id"]}
    for name in STEP_SERIES:
        curve = curves[curves["name"] == name]
        assert list(curve["step"]) == list(range(1, 13)), name  # steps 1..12, once each, in order
        for step, value, logged_by in zip(curve["step"], curve["value"], curve["logged_by"], strict=True):
            run_id = first["_id"] if step <= 6 else second["_id"]
            assert logged_by == run_id and value == own[(run_id, name)][step], (name, step)
    for name in EVAL_SERIES:  # evaluated at the end of each run: step 6 (first run), step 12 (second)
        assert list(curves[curves["name"] == name]["step"]) == [6, 12]

    plain = load_metrics([second["_id"]], "loss", db=db, columns=[])
    assert list(plain["step"]) == list(range(7, 13)) and "logged_by" not in plain.columns  # default unchanged


def test_metrics_collection_is_indexed_by_run_and_name(resumed_pair):
    db, _, _ = resumed_pair
    keys = [index["key"] for index in db.metrics.index_information().values()]
    assert [("run_id", 1), ("name", 1)] in keys
    assert [("status", 1)] in [index["key"] for index in db.runs.index_information().values()]
