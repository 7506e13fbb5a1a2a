"""What users of TensorBoard and of DeepSpeed checkpoints get from a real run: every logged metric in the event
file (read back with TensorBoard's own reader), and only the newest checkpoints kept."""

from __future__ import annotations

import json
import uuid

import pymongo
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.distill_runner import check, read_metrics, run_distill, run_env


@pytest.fixture
def db(mongo_url):
    name = f"kd_monitors_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def test_tensorboard_gets_every_logged_metric_and_old_checkpoints_are_pruned(tmp_path, db):
    out = tmp_path / "run"
    check(run_distill(["smoke", "tensorboard", "progress_bar=False", "max_steps=6", "log_every=2",
                       "checkpoint_every=2", "checkpoint_keep=2", "eval_max_sequences=0", f"output_dir={out}"],
                      run_env(*db)))
    logged = read_metrics(out)
    (event_dir,) = [p.parent for p in (out / "monitor").rglob("events.out.tfevents.*")]
    events = EventAccumulator(str(event_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {f"distill/{name}" for name in logged[0] if name != "step"}
    assert expected <= tags and {"distill/loss_ce", "distill/grad_norm", "distill/tokens_per_second"} <= expected
    for name in ("loss", "loss_ce", "grad_norm"):
        series = [(e.step, e.value) for e in events.Scalars(f"distill/{name}")]
        assert series == [(m["step"], pytest.approx(m[name], rel=1e-6)) for m in logged]
    steps = sorted(p.name for p in (out / "checkpoints").glob("step*"))
    assert steps == ["step00000004", "step00000006"]  # checkpoint_keep=2 of 2, 4, 6
    assert (out / "checkpoints" / "latest").read_text().strip() == "step00000006"
    run = pymongo.MongoClient(db[0])[db[1]]["runs"].find_one({"config.output_dir": str(out)})
    assert run["status"] == "COMPLETED" and run["info"]["deepspeed_config"]["tensorboard"]["enabled"] is True
    assert json.dumps(run["config"]["monitors"]) == '["tensorboard"]'
