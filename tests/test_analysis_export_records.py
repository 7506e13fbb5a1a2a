"""The run export committed beside a result: through the command line, against hand-made records in the real
test database; every exported field equals the stored one, and the host's environment and metric ids stay out."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.distill_runner import PROJECT
from tests.test_analysis_runs import database, insert_run  # noqa: F401  (database: a fixture)


def test_the_export_holds_each_runs_record_and_final_metrics(database, mongo_url, tmp_path):  # noqa: F811
    insert_run(database, 3, {"T": 3.0}, metrics={"loss": ([1, 2, 3], [3.0, 2.5, 2.25])}, result={"steps": 3},
               info={"student_summary": {"family": "llama"}})
    insert_run(database, 8, {"distill_run_id": 3, "distill_db": {"url": "mongodb://kd:hunter2@db:27017/x"}},
               experiment="finetune", result={"macro_accuracy": 0.57})
    database.runs.update_one({"_id": 3}, {"$set": {"meta.comment": "kd-sweep sweep=s variant=full",
                                                   "meta.options": {"--mongo_db": "mongodb://u:secret@db:27017"}}})
    out = tmp_path / "records.json"
    proc = subprocess.run([sys.executable, "-m", "analysis.export_records", "--run", "distill=3", "--run",
                           "finetune=8", "--what", "a test", "--out", str(out), "--url", mongo_url,
                           "--db", database.name], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(out.read_text())
    assert exported["what"] == "a test" and list(exported["runs"]) == ["distill", "finetune"]
    distill, stored = exported["runs"]["distill"], database.runs.find_one({"_id": 3})
    assert distill["run_id"] == 3 and distill["config"] == stored["config"] and distill["result"] == {"steps": 3}
    assert distill["start_time"] == stored["start_time"].isoformat() and distill["status"] == "COMPLETED"
    assert distill["final_metrics"] == {"loss": {"step": 3, "value": 2.25}}
    assert distill["info"]["student_summary"] == {"family": "llama"} and "metrics" not in distill["info"]
    # the comment (a sweep's tags) is kept; the command line's options, which may hold a URL, are not
    assert distill["meta"] == {"command": "main", "comment": "kd-sweep sweep=s variant=full"}
    assert "secret" not in out.read_text()
    assert "ENV" not in distill["host"] and distill["experiment"] == {"name": "distill", "mainfile": "distill.py"}
    assert exported["runs"]["finetune"]["result"] == {"macro_accuracy": 0.57}
    # a password in any URL of a record is masked: the export is meant to be committed
    assert exported["runs"]["finetune"]["config"]["distill_db"]["url"] == "mongodb://kd:***@db:27017/x"
    assert "hunter2" not in out.read_text()
    missing = subprocess.run([sys.executable, "-m", "analysis.export_records", "--run", "x=99", "--what", "w",
                              "--out", str(tmp_path / "no.json"), "--url", mongo_url, "--db", database.name],
                             cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no run 99 in database" in missing.stderr and not (tmp_path / "no.json").exists()
