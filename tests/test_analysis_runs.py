"""The runs table (analysis.load_runs / load_metrics) on hand-made Sacred-shaped documents in a fresh database on
the test server: flattened config, filters (pushed into the MongoDB query), final/best metric values, the
downstream join."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pymongo
import pytest
from pymongo import monitoring

from analysis import load_metrics, load_runs, one_of, resume_chain, variant_of
from kd_plugin.ablation import VARIANTS
from kd_plugin.tracking.dead_runs import utc_now


@pytest.fixture
def database(mongo_url, db_name):
    """A fresh database on the session's test server (tests/conftest.py), dropped afterwards."""
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    yield client[db_name]
    client.drop_database(db_name)
    client.close()


BASE_CONFIG = {
    "T": 2.0, "alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "alpha_mse": 0.0, "seed": 1,
    "teacher": "random-tiny", "loss_weights": {}, "max_steps": 6,
    "student": {"layers": "alternate", "n_layers": None, "fold_token_type_embedding": True},
    "masking": {"mlm_probability": 0.15}, "optim": {"lr": 5e-4, "betas": [0.9, 0.98]},
}
T0 = dt.datetime(2026, 11, 20, 12, 0, 0)


def merge(base: dict, updates: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if rest:
            out[head] = merge(out.get(head) or {}, {rest: value})
        else:
            out[key] = value
    return out


def insert_run(db, run_id, config=None, *, experiment="distill", status="COMPLETED", start=T0, seconds=60.0,
               metrics=None, result=None, comment=None, info=None):
    """A run document as Sacred's MongoObserver writes it, plus its metric series."""
    metric_ids = []
    for name, (steps, values) in (metrics or {}).items():
        inserted = db.metrics.insert_one({
            "run_id": run_id, "name": name, "steps": list(steps), "values": list(values),
            "timestamps": [start + dt.timedelta(seconds=i) for i in range(len(steps))],
        })
        metric_ids.append({"id": str(inserted.inserted_id), "name": name})
    doc = {
        "_id": run_id, "experiment": {"name": experiment, "mainfile": f"{experiment}.py"},
        "format": "MongoObserver-0.7.0", "command": "main", "status": status,
        "config": config if experiment != "distill" else merge(BASE_CONFIG, config or {}),
        "host": {"hostname": "vm", "cpu": "AMD EPYC", "python_version": "3.11.7", "ENV": {}},
        "start_time": start, "heartbeat": start + dt.timedelta(seconds=seconds),
        "stop_time": start + dt.timedelta(seconds=seconds) if status != "RUNNING" else None,
        "result": result, "info": {"metrics": metric_ids, "student_dir": f"/tmp/run{run_id}/student", **(info or {})},
        "meta": {"command": "main", "comment": comment, "options": {}}, "captured_out": "x" * 1000,
        "artifacts": [], "resources": [],
    }
    db.runs.insert_one(doc)


class FindFilters(monitoring.CommandListener):
    """Records the filter of every `find` on the runs collection."""

    def __init__(self):
        self.filters = []

    def started(self, event):
        if event.command_name == "find" and event.command.get("find") == "runs":
            self.filters.append(event.command.get("filter", {}))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_one_row_per_run_with_flat_config_metadata_and_metric_summaries(database):
    insert_run(database, 1, {"seed": 1}, seconds=90.5, metrics={
        "loss": ([1, 2, 3, 4], [9.0, 4.0, 5.0, 6.0]),            # best (min) 4.0 at step 2, final 6.0
        "loss_ce": ([1, 2, 3, 4], [3.0, 2.0, 1.0, 1.5]),
        "lr": ([1, 2, 3, 4], [1e-4, 2e-4, 3e-4, 4e-4]),
        "tokens_per_second": ([1, 2, 3, 4], [100.0, 300.0, 200.0, 250.0]),
    }, result={"final_loss": 6.0, "steps": 4, "student": {"n_layers": 2}})
    insert_run(database, 2, {"seed": 2, "student.layers": "random_init"}, start=T0 + dt.timedelta(hours=1),
               status="FAILED", metrics={"loss": ([1, 2], [7.0, float("nan")])})

    runs = load_runs(db=database)

    assert list(runs.index) == [1, 2] and runs.index.name == "run_id"
    one = runs.loc[1]
    assert (one["experiment"], one["status"], one["host"]) == ("distill", "COMPLETED", "vm")
    assert one["T"] == 2.0 and one["alpha_ce"] == 5.0 and one["seed"] == 1
    assert one["student.layers"] == "alternate" and pd.isna(one["student.n_layers"])
    assert one["masking.mlm_probability"] == 0.15 and one["optim.betas"] == (0.9, 0.98)
    assert one["start_time"] == pd.Timestamp(T0) and one["duration_s"] == pytest.approx(90.5)
    assert one["result.steps"] == 4 and one["result.student.n_layers"] == 2
    assert one["final.loss"] == 6.0 and one["best.loss"] == 4.0
    assert one["final.loss_ce"] == 1.5 and one["best.loss_ce"] == 1.0
    assert one["final.lr"] == pytest.approx(4e-4) and "best.lr" not in runs.columns  # no "best" learning rate
    assert one["best.tokens_per_second"] == 300.0
    assert one["variant"] == "full" and runs.loc[2, "variant"] == "random_init"
    assert runs.loc[2, "status"] == "FAILED"
    assert np.isnan(runs.loc[2, "final.loss"]) and runs.loc[2, "best.loss"] == 7.0  # the last point is NaN
    assert np.isnan(runs.loc[2, "final.loss_ce"])  # run 2 never logged loss_ce


def test_filters_as_users_write_them_run_in_the_database(database, mongo_url):
    day = dt.timedelta(days=1)
    insert_run(database, 1, {"T": 2, "alpha_cos": 1.0}, start=T0)                       # T stored as an int
    insert_run(database, 2, {"T": 2.0, "alpha_cos": 0.0}, start=T0 + day)
    insert_run(database, 3, {"T": 4.0, "alpha_cos": 1, "student.layers": "random_init"}, start=T0 + 2 * day)
    insert_run(database, 4, {"T": 2.0, "student.layers": "random_init"}, start=T0 + 2 * day, status="FAILED")
    insert_run(database, 5, {"task": "mr", "distill_run_id": 1}, experiment="finetune", start=T0 + 3 * day)

    def ids(**kwargs):
        return list(load_runs(db=database, metrics=False, downstream=False, **kwargs).index)

    assert ids() == [1, 2, 3, 4]                         # experiment="distill" by default
    assert ids(T=2) == [1, 2, 4] and ids(T=2.0) == [1, 2, 4]  # numbers match across int/float
    assert ids(T=2, alpha_cos=1) == [1, 4] and ids(T=2, alpha_cos=0) == [2]
    assert ids(**{"student.layers": "random_init"}) == [3, 4]
    assert ids(student__layers="random_init", T=2) == [4]
    assert ids(status="COMPLETED") == [1, 2, 3] and ids(status=["FAILED"]) == [4]
    assert ids(T={2, 4}, alpha_cos=1) == [1, 3, 4] and ids(T=one_of(4.0)) == [3]
    assert ids(**{"optim.betas": [0.9, 0.98]}) == [1, 2, 3, 4]  # a list is that exact value
    assert ids(T={"$gt": 2}) == [3]
    assert ids(**{"student.n_layers": None}) == [1, 2, 3, 4]
    assert ids(experiment="finetune") == [5] and ids(experiment=None) == [1, 2, 3, 4, 5]
    assert ids(experiment="finetune", task="mr") == [5]
    # Date range on start_time: since inclusive; a date-only `until` includes that whole day.
    assert ids(since=T0 + day) == [2, 3, 4]
    assert ids(until="2026-11-21") == [1, 2]
    assert ids(since="2026-11-21", until="2026-11-21") == [2]
    assert ids(since=dt.date(2026, 11, 22)) == [3, 4]
    assert ids(until=T0) == [1]                          # a time: inclusive at that instant
    aware = dt.datetime(2026, 11, 21, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))  # = 12:00 UTC
    assert ids(since=aware) == [2, 3, 4]
    assert ids(run_ids=[3, 1]) == [1, 3]

    # The filters are the MongoDB query itself: only matching documents leave the database.
    listener = FindFilters()
    client = pymongo.MongoClient(mongo_url, event_listeners=[listener])
    try:
        load_runs(db=client[database.name], status="COMPLETED", since="2026-11-21", student__layers="random_init",
                  T=2, metrics=False, downstream=False)
    finally:
        client.close()
    query = listener.filters[0]
    assert query["$or"] == [{"experiment.name": "distill"}, {"experiment.mainfile": {"$in": ["distill.py"]}}]
    assert query["status"] == "COMPLETED"
    assert query["config.student.layers"] == "random_init" and query["config.T"] == 2
    assert query["start_time"] == {"$gte": dt.datetime(2026, 11, 21)}


def test_a_run_renamed_with_n_is_still_a_distillation_run(tmp_path, mongo_url, db_name, database):
    """Sacred's `-n NAME` changes the run's display name; the analysis selects runs by their script, so a named
    run (and the fine-tune linked to it) is not silently left out of the default table."""
    import subprocess
    import sys

    from tests.distill_runner import PROJECT, check, run_env

    check(subprocess.run([sys.executable, str(PROJECT / "experiments" / "distill.py"), "-n", "my-ablation", "with",
                          "smoke", "max_steps=2", "eval_max_sequences=0", "progress_bar=False",
                          f"output_dir={tmp_path / 'run'}"], env=run_env(mongo_url, db_name), cwd=PROJECT,
                         capture_output=True, text=True, timeout=600))
    (doc,) = list(database.runs.find({}, {"experiment": 1}))
    assert doc["experiment"]["name"] == "my-ablation" and doc["experiment"]["mainfile"] == "distill.py"
    runs = load_runs(db=database, metrics=False, downstream=False)
    assert list(runs.index) == [doc["_id"]] and runs.loc[doc["_id"], "experiment"] == "my-ablation"
    insert_run(database, 900, {"distill_run_id": doc["_id"], "task": "mr"}, experiment="finetune",
               result={"macro_accuracy": 0.5, "tasks": {"mr": {"accuracy": 0.5}}})
    database.runs.update_one({"_id": 900}, {"$set": {"experiment.name": "my-eval"}})  # renamed fine-tune too
    assert load_runs(db=database, metrics=False).loc[doc["_id"], "downstream.run_id"] == 900


def test_misspelt_config_key_is_an_error_not_an_empty_table(database):
    insert_run(database, 1)
    with pytest.raises(KeyError, match="alpah_cos"):
        load_runs(db=database, alpah_cos=1)
    assert load_runs(db=database, alpha_cos=7).empty  # a known key with no match: just empty


def test_sweep_tags_give_sweep_and_fallback_variant(database):
    insert_run(database, 1, comment="kd-sweep sweep=s1 variant=full")
    insert_run(database, 2, {"alpha_ce": 3.0}, comment="kd-sweep sweep=s1 variant=mine")  # no paper variant
    insert_run(database, 3, {"alpha_ce": 0.0}, comment="kd-sweep sweep=s10 variant=no_ce")
    insert_run(database, 4, {"alpha_mlm": 0.0})

    runs = load_runs(db=database)
    assert runs["variant"].tolist() == ["full", "mine", "no_ce", "no_mlm"]
    assert runs["sweep"].tolist()[:3] == ["s1", "s1", "s10"] and pd.isna(runs.loc[4, "sweep"])
    assert list(load_runs(db=database, sweep="s1").index) == [1, 2]   # a whole word: not s10


def test_variant_of_recognises_each_paper_variant():
    for name, variant in VARIANTS.items():
        nested = merge(BASE_CONFIG, variant.updates)
        assert variant_of(nested) == name
        assert variant_of({"config": nested}) == name
        flat = {"alpha_ce": 5, "alpha_mlm": 2, "alpha_cos": 1, "student.layers": "alternate", **variant.updates}
        assert variant_of(flat) == name
    assert variant_of(merge(BASE_CONFIG, {"alpha_ce": 1.0})) is None
    assert variant_of(merge(BASE_CONFIG, {"alpha_mse": 1.0})) is None
    assert variant_of(merge(BASE_CONFIG, {"loss_weights": {"hidden_mse": 1.0}})) is None
    assert variant_of({"task": "mr"}) is None


def test_downstream_scores_join_the_distill_row(database):
    insert_run(database, 1)
    insert_run(database, 2, {"alpha_ce": 0.0})
    insert_run(database, 3, {"alpha_cos": 0.0})
    tasks = {"mr": {"accuracy": 0.71, "teacher_accuracy": 0.8, "seconds": 3.0, "validation_accuracy_per_epoch": [0.7]},
             "bbc": {"accuracy": 0.9}}
    insert_run(database, 10, {"distill_run_id": 1}, experiment="finetune", start=T0 + dt.timedelta(hours=1),
               result={"macro_accuracy": 0.5, "tasks": {"mr": {"accuracy": 0.4}, "bbc": {"accuracy": 0.6}}})
    insert_run(database, 11, {"distill_run_id": 1}, experiment="finetune", start=T0 + dt.timedelta(hours=2),
               result={"macro_accuracy": 0.805, "tasks": tasks, "retained_fraction": 0.95, "wall_seconds": 9.0})
    insert_run(database, 12, {"distill_run_id": 1}, experiment="finetune", start=T0 + dt.timedelta(hours=3),
               status="FAILED", result=None)
    insert_run(database, 13, {"distill_run_id": "2"}, experiment="finetune", start=T0 + dt.timedelta(hours=1),
               result={"macro_accuracy": 0.6, "tasks": {"mr": {"accuracy": 0.6}}})

    runs = load_runs(db=database)

    assert list(runs.index) == [1, 2, 3]  # evaluation runs are joined, not listed
    one = runs.loc[1]
    assert one["downstream.run_id"] == 11  # the latest completed evaluation
    assert one["downstream.macro_accuracy"] == pytest.approx(0.805)
    assert one["downstream.mr"] == pytest.approx(0.71) and one["downstream.bbc"] == pytest.approx(0.9)
    assert one["downstream.mr.teacher_accuracy"] == pytest.approx(0.8)
    assert one["downstream.retained_fraction"] == pytest.approx(0.95)
    assert "downstream.mr.seconds" not in runs.columns and "downstream.wall_seconds" not in runs.columns
    assert runs.loc[2, "downstream.macro_accuracy"] == pytest.approx(0.6)  # id recorded as text
    assert runs.loc[2, "downstream.run_id"] == 13
    assert pd.isna(runs.loc[3, "downstream.macro_accuracy"]) and pd.isna(runs.loc[3, "downstream.run_id"])
    assert "downstream.macro_accuracy" not in load_runs(db=database, downstream=False).columns


def test_load_metrics_long_form_with_the_columns_that_differ(database):
    insert_run(database, 1, {"seed": 1}, metrics={"loss": ([1, 2, 3], [3.0, 2.0, 1.0]), "lr": ([1, 2, 3], [0.1] * 3)})
    insert_run(database, 2, {"seed": 2, "alpha_ce": 0.0}, metrics={"loss": ([2, 1], [5.0, 6.0])})
    runs = load_runs(db=database)

    curves = load_metrics(runs, names="loss", db=database)
    assert list(curves.columns) == ["run_id", "name", "step", "value", "variant", "seed", "alpha_ce"]
    assert curves[["run_id", "step", "value"]].values.tolist() == [[1, 1, 3.0], [1, 2, 2.0], [1, 3, 1.0],
                                                                  [2, 1, 6.0], [2, 2, 5.0]]
    assert curves.groupby("run_id")["variant"].first().tolist() == ["full", "no_ce"]

    by_id = load_metrics([1, 2], db=database, columns=["seed"])
    assert set(by_id["name"]) == {"loss", "lr"} and list(by_id.columns) == ["run_id", "name", "step", "value", "seed"]
    assert load_metrics(2, db=database).shape[0] == 2


def test_database_comes_from_the_environment(database, mongo_url, monkeypatch):
    insert_run(database, 7)
    monkeypatch.setenv("KD_MONGO_URL", mongo_url)
    monkeypatch.setenv("KD_MONGO_DB", database.name)
    assert list(load_runs().index) == [7]


def test_dead_runs_are_shown_failed_as_died_and_nothing_is_written(database, monkeypatch):
    monkeypatch.delenv("KD_DEAD_AFTER_S", raising=False)
    now = utc_now().replace(microsecond=0)
    insert_run(database, 1, status="RUNNING", start=now - dt.timedelta(hours=1), seconds=60)  # silent for 59 min
    insert_run(database, 2, status="RUNNING", start=now - dt.timedelta(seconds=30), seconds=25)  # beat 5 s ago
    insert_run(database, 3, status="COMPLETED")

    runs = load_runs(db=database, metrics=False, downstream=False)
    assert runs["status"].tolist() == ["FAILED", "RUNNING", "COMPLETED"]
    assert runs["died"].tolist() == [True, False, False]
    assert runs.loc[1, "stop_time"] == pd.Timestamp(now - dt.timedelta(minutes=59))  # the last heartbeat
    assert runs.loc[1, "duration_s"] == 60.0 and pd.isna(runs.loc[2, "stop_time"])

    def ids(status):
        return list(load_runs(db=database, status=status, metrics=False, downstream=False).index)

    assert ids("DIED") == [1] and ids("RUNNING") == [2] and ids(["DIED", "COMPLETED"]) == [1, 3]
    assert ids("FAILED") == [1]  # Sacred's own status, as Omniboard filters it
    assert [d["status"] for d in database.runs.find().sort("_id", 1)] == ["RUNNING", "RUNNING", "COMPLETED"]

    monkeypatch.setenv("KD_DEAD_AFTER_S", "1")  # the threshold of kd_plugin.tracking.dead_runs
    assert ids("DIED") == [1, 2]


def test_resume_chain_columns_and_stitched_curves(database):
    """Run 1 logged steps 1-8; run 2 resumed it from its step-4 checkpoint and logged 5-10; run 3 resumed run 2
    at step 8 and logged 9-12. Run 4 says it resumed run 99, which this database does not hold."""
    def resumed(run_id, step):
        return {"resumed_from_run": run_id, "resumed_from": {"path": f"/ckpt/{run_id}", "step": step, "run_id": run_id}}

    insert_run(database, 1, metrics={"loss": (range(1, 9), [10.0 + i for i in range(8)])}, info={"resumed_by_run": 2})
    insert_run(database, 2, metrics={"loss": (range(5, 11), [20.0 + i for i in range(6)])},
               info={**resumed(1, 4), "resumed_by_run": 3})
    insert_run(database, 3, metrics={"loss": (range(9, 13), [30.0 + i for i in range(4)])}, info=resumed(2, 8))
    insert_run(database, 4, metrics={"loss": ([4, 5], [40.0, 41.0])}, info=resumed(99, 3))

    runs = load_runs(db=database, downstream=False)
    assert runs["resumed_from_run"].tolist() == [pd.NA, 1, 2, 99]
    assert runs["resumed_by_run"].tolist() == [2, 3, pd.NA, pd.NA]
    assert "resumed_from_run" not in load_metrics(runs, db=database).columns  # not a config column
    assert [resume_chain(i, db=database) for i in (1, 2, 3, 4)] == [[1], [1, 2], [1, 2, 3], [4]]

    curves = load_metrics(runs, "loss", db=database, columns=[], follow_resumes=True)
    def curve(run_id):
        rows = curves[curves["run_id"] == run_id]
        return list(zip(rows["step"], rows["value"], rows["logged_by"], strict=True))

    assert curve(3) == ([(s, 10.0 + s - 1, 1) for s in range(1, 5)] + [(s, 20.0 + s - 5, 2) for s in range(5, 9)]
                        + [(s, 30.0 + s - 9, 3) for s in range(9, 13)])
    assert curve(2) == [(s, 10.0 + s - 1, 1) for s in range(1, 5)] + [(s, 20.0 + s - 5, 2) for s in range(5, 11)]
    assert curve(1) == [(s, 10.0 + s - 1, 1) for s in range(1, 9)]
    assert curve(4) == [(4, 40.0, 4), (5, 41.0, 4)]
    assert list(curves.columns) == ["run_id", "name", "step", "value", "logged_by"]


def test_a_tz_aware_client_gives_the_same_table(database, mongo_url, monkeypatch):
    """Notebooks often open ``MongoClient(tz_aware=True)``: times come back aware, and must not be mixed with
    the naive UTC that Sacred writes and the DIED rule computes (a TypeError before)."""
    monkeypatch.delenv("KD_DEAD_AFTER_S", raising=False)
    now = utc_now().replace(microsecond=0)
    insert_run(database, 1, status="RUNNING", start=now - dt.timedelta(hours=1), seconds=60)  # dead: DIED
    insert_run(database, 2, seconds=90.5, metrics={"loss": ([1, 2], [3.0, 2.0])})
    aware_client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        aware = load_runs(db=aware_client[database.name])
        curves = load_metrics(2, db=aware_client[database.name])
    finally:
        aware_client.close()
    naive = load_runs(db=database)

    assert aware["status"].tolist() == ["FAILED", "COMPLETED"] and aware["died"].tolist() == [True, False]
    assert aware.loc[1, "stop_time"] == pd.Timestamp(now - dt.timedelta(minutes=59))  # its last heartbeat
    assert aware.loc[2, "start_time"] == pd.Timestamp(T0) and aware.loc[2, "duration_s"] == pytest.approx(90.5)
    pd.testing.assert_frame_equal(aware, naive)
    assert curves["value"].tolist() == [3.0, 2.0]
