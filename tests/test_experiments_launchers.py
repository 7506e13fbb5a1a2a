"""`experiments/distill.py` under torchrun as under the deepspeed launcher: one run record per job (rank 0), the
same seed on every rank, every process's node rank and host in the run's info (and world size and launcher in the
analysis, which will not average a 2-process run with a 1-process one as seeds); two "nodes" on one machine;
and Sacred's `-F` giving a file-only run without starting the embedded database."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pymongo
import pytest

from analysis import ablation_table, load_metrics, load_runs, plot_loss_curves
from tests.distill_runner import PROJECT, VENV_BIN, check, free_port, read_metrics, run_env

SCRIPT = str(PROJECT / "experiments" / "distill.py")
TINY = ["smoke", "progress_bar=False", "max_steps=3", "log_every=1", "eval_max_sequences=0"]


@pytest.fixture
def db(mongo_url):
    name = f"kd_launch_{uuid.uuid4().hex[:8]}"
    yield mongo_url, name
    pymongo.MongoClient(mongo_url).drop_database(name)


def records(db) -> list[dict]:
    return list(pymongo.MongoClient(db[0])[db[1]]["runs"].find({}, {"status": 1, "info.ranks": 1, "config.seed": 1}))


def test_torchrun_two_processes_record_one_run_with_both_ranks(tmp_path, db):
    out = tmp_path / "run"
    cmd = [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), SCRIPT,
           "with", *TINY, f"output_dir={out}"]
    check(subprocess.run(cmd, env=run_env(*db), cwd=PROJECT, capture_output=True, text=True, timeout=900))
    (record,) = records(db)
    assert record["status"] == "COMPLETED" and record["config"]["seed"] == 42
    ranks = record["info"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["launcher"] for r in ranks} == {"torchrun"}
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]

    # The same config on one process, seed 43: the analysis shows world size and launcher, and refuses to
    # average the two runs as "seeds" of one setting (they differ in more than the seed).
    check(subprocess.run([sys.executable, SCRIPT, "with", *TINY, "seed=43", f"output_dir={tmp_path / 'one'}"],
                         env=run_env(*db), cwd=PROJECT, capture_output=True, text=True, timeout=900))
    database = pymongo.MongoClient(db[0])[db[1]]
    runs = load_runs(db=database, downstream=False)
    assert runs[["world_size", "launcher", "seed"]].values.tolist() == [[2, "torchrun", 42], [1, "none", 43]]
    with pytest.raises(ValueError, match=r"differ in more than the seed: full: world_size \[1, 2\], "
                                         r"launcher \['none', 'torchrun'\]"):
        ablation_table(runs, group_by="variant", metrics="final.loss")
    with pytest.warns(UserWarning, match="rows split by"):
        split = ablation_table(runs, group_by="variant", metrics="final.loss", mixed="split")
    assert split["n_seeds"].tolist() == [1, 1] and len(split) == 2
    curves = load_metrics(runs, "loss", db=database)
    with pytest.raises(ValueError, match="world_size"):
        plot_loss_curves(curves, path=tmp_path / "mixed.png")
    assert plot_loss_curves(curves, path=tmp_path / "split.png", mixed="split").stat().st_size > 0


def test_two_nodes_on_one_machine_record_one_run_with_both_node_ranks(tmp_path, db):
    out, port = tmp_path / "run", str(free_port())
    procs = [subprocess.Popen([str(VENV_BIN / "torchrun"), "--nnodes", "2", "--node_rank", str(node),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
                               SCRIPT, "with", *TINY, f"output_dir={out}"],
                              env=run_env(*db), cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for node in (0, 1)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
    (record,) = records(db)
    assert record["status"] == "COMPLETED"
    assert sorted((r["rank"], r["node_rank"]) for r in record["info"]["ranks"]) == [(0, 0), (1, 1)]


def test_file_storage_flag_gives_a_file_only_run_without_the_embedded_database(tmp_path):
    runs_dir, db_dir = tmp_path / "file_runs", tmp_path / "embedded"
    env = {k: v for k, v in run_env().items() if not k.startswith("KD_MONGO")}
    env["KD_DB_DIR"] = str(db_dir)
    proc = subprocess.run([sys.executable, SCRIPT, "-F", str(runs_dir), "with", *TINY,
                           f"output_dir={tmp_path / 'run'}"], env=env, cwd=PROJECT, capture_output=True, text=True,
                          timeout=900)
    check(proc)
    (run_json,) = list(runs_dir.glob("*/run.json"))
    assert json.loads(run_json.read_text())["status"] == "COMPLETED"
    assert not (db_dir / "kd_server.json").exists() and "embedded SecantusDB" not in proc.stderr
    # the card says the run id is a file-storage folder's, never a database run id it could be taken for
    card = (tmp_path / "run" / "student" / "README.md").read_text()
    assert (f"Distilled by the Sacred file-storage run `{run_json.parent.name}` in `{runs_dir}`, a run folder, "
            "not a database run id") in card
    from kd_plugin.downstream.run_link import check_model_is_the_runs_student
    from kd_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="is not the student of distill run"):
        check_model_is_the_runs_student(str(tmp_path / "run" / "student"), int(run_json.parent.name), None)
