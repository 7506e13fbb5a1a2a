"""End to end, the way users produce the ablation table: real distillation runs from the sweep command (2 variants
x 2 seeds, smoke, 3 steps), then ``analysis/ablation.ipynb`` executed with nbclient against that database."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pandas as pd
import pymongo
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from kd_plugin.tracking.embedded_db import stop_embedded_server

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOK = PROJECT / "analysis" / "ablation.ipynb"
SWEEP_TIMEOUT_S = 900  # about 70-100 s on an idle 2-core machine; generous for a busy one


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def venv_kernel(prefix: Path) -> KernelManager:
    """A kernel spec written for this interpreter (the venv's python) into a private directory."""
    from ipykernel.kernelspec import install

    install(kernel_name="kd-analysis-test", prefix=str(prefix))
    specs = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    assert specs.get_kernel_spec("kd-analysis-test").argv[0] == sys.executable
    return KernelManager(kernel_name="kd-analysis-test", kernel_spec_manager=specs)


def run_sweep(args: list[str], env: dict[str, str], timeout: float = SWEEP_TIMEOUT_S) -> tuple[int, str]:
    """The sweep command; on timeout it is stopped with SIGTERM, which it passes on to its runs (no orphans)."""
    proc = subprocess.Popen([sys.executable, str(PROJECT / "experiments" / "sweep.py"), *args], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        stdout, _ = proc.communicate(timeout=120)
        pytest.fail(f"the sweep took over {timeout:.0f} s (a loaded machine?):\n{stdout[-4000:]}")
    return proc.returncode, stdout


def execute_notebook(kernel_prefix: Path) -> tuple[list, dict]:
    """Run the committed notebook; its outputs and the JSON summary its last cell prints."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    km = venv_kernel(kernel_prefix)
    try:
        NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        if km.has_kernel:  # nbclient leaves a kernel it did not create running
            km.shutdown_kernel(now=True)
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    summary = json.loads([o.text for o in outputs if o.output_type == "stream" and o.text.startswith("{")][-1])
    return outputs, summary


def test_sweep_then_notebook_gives_the_ablation_table(mongo_url, db_name, tmp_path, monkeypatch):
    sweep_id = f"e2e-{uuid.uuid4().hex[:6]}"
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KD_MONGO")}
    # Nothing of this test may reach a user's default embedded database.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               KD_DB_DIR=str(tmp_path / "embedded"), KD_RUNS_DIR=str(tmp_path / "runs"))
    try:
        returncode, stdout = run_sweep(
            ["--seeds", "1", "2", "--variants", "full", "no_ce", "smoke", "max_steps=3", "progress_bar=False",
             "--name", sweep_id, "--mongo-url", mongo_url, "--db", db_name, "--output-root", str(tmp_path / "distill")],
            env,
        )
        assert returncode == 0, stdout[-4000:]
        runs = list(client[db_name].runs.find({}, {"status": 1, "meta.comment": 1, "config.seed": 1}))
        assert len(runs) == 4 and {r["status"] for r in runs} == {"COMPLETED"}
        assert all(f"sweep={sweep_id}" in r["meta"]["comment"] for r in runs)
        assert sorted(p.name for p in (tmp_path / "distill").iterdir()) == [
            "full-seed1", "full-seed2", "logs", "no_ce-seed1", "no_ce-seed2"]

        out_dir = tmp_path / "analysis"
        for key, value in {"KD_MONGO_URL": mongo_url, "KD_MONGO_DB": db_name, "KD_SWEEP": sweep_id,
                           "KD_ANALYSIS_DIR": str(out_dir), "KD_DB_DIR": str(tmp_path / "embedded")}.items():
            monkeypatch.setenv(key, value)  # the kernel inherits this environment
        outputs, summary = execute_notebook(tmp_path / "jupyter")

        # -- without evaluation runs: the final training losses per term
        assert summary["sweep"] == sweep_id and summary["n_runs"] == 4
        table = pd.read_csv(summary["table_csv"], index_col="variant")
        assert list(table.index) == ["full", "no_ce"]  # one row per variant, the reference first
        assert table["n_seeds"].tolist() == [2, 2]
        deltas = [c for c in table.columns if c.startswith("Δ ")]
        assert deltas and all(table.loc["full", c] == 0.0 for c in deltas)
        assert "Δ final.loss_mlm" in deltas and pd.notna(table.loc["no_ce", "Δ final.loss_mlm"])
        shown = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs if o.output_type == "execute_result")
        assert "no_ce" in shown and " ± " in shown  # the formatted table is displayed
        printed = "\n".join(o.text for o in outputs if o.output_type == "stream")
        assert "WARNING" not in printed  # the runs differ only in variant and seed
        png = Path(summary["plots"]["loss"])
        assert png.parent == out_dir and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert any("image/png" in o.get("data", {}) for o in outputs if o.output_type == "display_data")

        # -- with evaluation runs pointing back (as the finetune experiment saves them): the downstream score
        variant_of_run = {r["_id"]: r["meta"]["comment"].split("variant=")[1] for r in runs}
        accuracy = {r["_id"]: (0.80 if variant_of_run[r["_id"]] == "full" else 0.70) + 0.01 * r["config"]["seed"]
                    for r in runs}
        client[db_name].runs.insert_many([
            {"_id": 100 + run_id, "experiment": {"name": "finetune"}, "status": "COMPLETED",
             "config": {"distill_run_id": run_id}, "start_time": datetime.datetime(2026, 1, 1),
             "result": {"macro_accuracy": acc, "tasks": {"mr_sentiment": {"accuracy": acc}}}}
            for run_id, acc in accuracy.items()
        ])
        outputs, summary = execute_notebook(tmp_path / "jupyter")

        # -- the command the sweep printed at its end: the table as markdown, and the export of its runs, from which
        # the same table is computed again without the database
        (printed_command,) = re.findall(r"commit beside it: `(.*?)`$", stdout, flags=re.M)
        export = tmp_path / "distill" / "logs" / "runs.json"
        assert printed_command.endswith(f"--sweep {sweep_id} --export-out {export}")
        live = subprocess.run(["bash", "-c", printed_command], cwd=PROJECT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert live.returncode == 0, live.stderr[-3000:]
        again = subprocess.run([sys.executable, "-m", "analysis.ablation_report", "--records", str(export)],
                               cwd=PROJECT, env={**env, "KD_MONGO_URL": "mongodb://127.0.0.1:9"}, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0 and again.stdout == live.stdout and "| no_ce | 2 |" in live.stdout
        records = json.loads(export.read_text())["runs"].values()
        assert sorted(r["run_id"] for r in records) == sorted([*accuracy, *(100 + i for i in accuracy)])
    finally:
        client.drop_database(db_name)
        client.close()
        stop_embedded_server(tmp_path / "embedded")  # in case anything started one there

    assert summary["metrics"] == ["downstream.macro_accuracy", "downstream.mr_sentiment"]
    table = pd.read_csv(summary["table_csv"], index_col="variant")
    assert table.loc["full", "downstream.macro_accuracy mean"] == pytest.approx(0.815)
    assert table.loc["no_ce", "Δ downstream.macro_accuracy"] == pytest.approx(-0.10)
    assert table.loc["full", "Δ downstream.macro_accuracy"] == 0.0
