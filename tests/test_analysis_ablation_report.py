"""The Table-4 reproduction (docs/results.md): its numbers are recomputed here independently (Python's statistics
module) from hand-made runs; the table read from the database equals the one read back from its export alone;
and the table in docs/results.md is regenerated from the committed export of the sweep's runs."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import ablation_report
from analysis.ablation_report import CSV_COLUMNS, markdown, runs_from_database, runs_from_records, summary
from kd_plugin.ablation import VARIANTS
from tests.test_analysis_runs import T0, database, insert_run  # noqa: F401  (database: a fixture)

PROJECT = Path(__file__).resolve().parents[1]

# variant -> {seed: (held-out accuracy, downstream macro accuracy)}, fractions as stored
RUNS = {
    "teacher": {1: (0.20, 0.81), 2: (0.22, 0.79)},
    "full": {1: (0.117, 0.756), 2: (0.115, 0.752), 3: (0.120, 0.760)},
    "no_ce": {1: (0.110, 0.700), 2: (0.112, 0.720), 3: (0.108, 0.710)},
    "random_init": {1: (0.047, 0.495)},
}


def _runs(extra: list[dict] | None = None) -> pd.DataFrame:
    rows, run_id = [], 1
    for variant, seeds in RUNS.items():
        for seed, (held_out, macro) in seeds.items():
            rows.append({"run_id": run_id, "downstream_run_id": run_id + 100, "variant": variant, "seed": seed,
                         "held_out_accuracy": held_out, "downstream_macro": macro})
            run_id += 1
    return pd.DataFrame(rows + (extra or []), columns=CSV_COLUMNS)


def _stats(variant: str, index: int) -> tuple[float, float, int]:
    values = [100 * scores[index] for scores in RUNS[variant].values()]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values)


def test_means_deltas_and_standard_errors_match_an_independent_computation():
    table = summary(_runs())
    assert list(table.index) == ["teacher", "full", "no_ce", "random_init"]  # teacher, then the paper's order
    for index, score in enumerate(["held_out_accuracy", "downstream_macro"]):
        full_mean, full_std, full_n = _stats("full", index)
        for variant in RUNS:
            mean, std, n = _stats(variant, index)
            assert table.loc[variant, "n"] == n
            assert table.loc[variant, f"{score} mean"] == pytest.approx(mean)
            if math.isnan(std):
                assert math.isnan(table.loc[variant, f"{score} std"])
                assert math.isnan(table.loc[variant, f"{score} se"])
                continue
            assert table.loc[variant, f"{score} std"] == pytest.approx(std)
            assert table.loc[variant, f"{score} delta"] == pytest.approx(mean - full_mean)
            assert table.loc[variant, f"{score} se"] == pytest.approx(math.sqrt(std**2 / n + full_std**2 / full_n))


def test_the_markdown_row_says_whether_a_difference_exceeds_two_standard_errors():
    text = markdown(summary(_runs()))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()[2:]}
    mean, std, _ = _stats("no_ce", 1)
    full_mean, full_std, _ = _stats("full", 1)
    se = math.sqrt(std**2 / 3 + full_std**2 / 3)
    assert rows["no_ce"][3] == f"{mean:.1f} ± {std:.1f}"
    assert rows["no_ce"][4] == f"{mean - full_mean:+.2f} ({'yes' if abs(mean - full_mean) > 2 * se else 'no'})"
    assert rows["no_ce"][4].endswith("(yes)")  # 4.6 points apart, SE ~0.6: this data is built to be significant
    assert rows["no_ce"][5] == "-2.96"  # the paper's Δ GLUE beside it
    assert rows["random_init"][4].endswith("(n < 2)")  # one seed: no standard error, not a "no"
    assert rows["teacher"][2] == "—" and rows["teacher"][5] == "—" and rows["full"][2] == "—"


def test_a_seed_run_twice_counts_once_with_its_latest_run():
    rerun = {"run_id": 99, "downstream_run_id": 199, "variant": "full", "seed": 1,
             "held_out_accuracy": 0.5, "downstream_macro": 0.9}
    table = summary(_runs([rerun]))
    values = [50.0, 100 * RUNS["full"][2][0], 100 * RUNS["full"][3][0]]  # seed 1's latest run replaces its first
    assert table.loc["full", "n"] == 3
    assert table.loc["full", "held_out_accuracy mean"] == pytest.approx(statistics.mean(values))


def test_the_report_lists_every_duplicate_and_the_verdicts_it_would_flip(tmp_path):
    """Through the command line: a seed run twice is named with the run that counts instead, and when keeping
    the other run would change a > 2 SE verdict, the report says which."""
    import subprocess
    import sys

    flip = {"run_id": 99, "downstream_run_id": 199, "variant": "no_ce", "seed": 1,  # as good as full: no effect
            "held_out_accuracy": 0.117, "downstream_macro": 0.757}
    path = tmp_path / "runs.csv"
    _runs([flip]).to_csv(path, index=False)
    proc = subprocess.run([sys.executable, "-m", "analysis.ablation_report", "--csv", str(path)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = _runs()
    no_ce_first = int(runs[(runs.variant == "no_ce") & (runs.seed == 1)].run_id.iloc[0])
    assert "1 run(s) left out: their seed was run more than once" in proc.stdout
    assert f"- no_ce seed 1: run {no_ce_first} (run 99 counts)" in proc.stdout
    latest = summary(_runs([flip]))
    earliest = summary(_runs([flip]), keep="first")
    flips = [s for s in ("held_out_accuracy", "downstream_macro")
             if (abs(latest.loc["no_ce", f"{s} delta"]) > 2 * latest.loc["no_ce", f"{s} se"])
             != (abs(earliest.loc["no_ce", f"{s} delta"]) > 2 * earliest.loc["no_ce", f"{s} se"])]
    assert flips, "this data is built so that the duplicate decides a verdict"
    assert ("would flip the > 2 SE verdict of: " + ", ".join(f"no_ce {s}" for s in flips)) in proc.stdout


def _insert_sweep(database, sweep: str = "s1") -> None:  # noqa: F811
    """RUNS as Sacred records: distillations (variant from their config) with a linked fine-tune each (run id +
    500), the teacher's own fine-tunes, and runs the table must not read."""
    run_id = 1
    for variant, seeds in RUNS.items():
        for seed, (held_out, macro) in seeds.items():
            comment = f"kd-sweep sweep={sweep} variant={variant}"
            if variant == "teacher":
                insert_run(database, run_id, {"seed": seed, "model": "bert-tiny-prepared"}, experiment="finetune",
                           comment=comment, result={"macro_accuracy": macro})
            else:
                insert_run(database, run_id, {**VARIANTS[variant].updates, "seed": seed}, comment=comment,
                           metrics={"held_out_mlm_accuracy_student": ([50, 150], [0.01, held_out]),
                                    # the teacher as measured by this seed's runs (the masks follow the seed)
                                    "held_out_mlm_accuracy_teacher": ([150], [RUNS["teacher"].get(seed, (0.3,))[0]])})
                insert_run(database, run_id + 500, {"distill_run_id": run_id, "seed": seed}, experiment="finetune",
                           comment=comment, result={"macro_accuracy": macro})
            run_id += 1
    # another sweep's run; a failed run of this sweep; an earlier fine-tune of run 3 (the later one, 503, counts)
    insert_run(database, 99, {**VARIANTS["full"].updates, "seed": 1}, comment="kd-sweep sweep=other variant=full")
    insert_run(database, 98, {**VARIANTS["full"].updates, "seed": 1}, comment=f"kd-sweep sweep={sweep} variant=full",
               status="FAILED", metrics={"held_out_mlm_accuracy_student": ([150], [0.9])})
    insert_run(database, 97, {"distill_run_id": 3, "seed": 1}, experiment="finetune",
               start=T0 - dt.timedelta(days=1), result={"macro_accuracy": 0.1})


def test_the_rows_come_from_the_sweeps_runs_in_the_database(database):  # noqa: F811
    """Distillations (variant from their config), their linked fine-tunes, the teacher's own fine-tunes."""
    _insert_sweep(database)
    rows = runs_from_database("s1", db=database)
    assert list(rows.columns) == CSV_COLUMNS
    assert len(rows) == sum(len(seeds) for seeds in RUNS.values())  # not the other sweep's run, not the failed one
    expected = _runs()
    for _, row in rows.iterrows():
        want = expected[(expected["variant"] == row["variant"]) & (expected["seed"] == row["seed"])].iloc[0]
        assert row["held_out_accuracy"] == pytest.approx(want["held_out_accuracy"])  # the last logged value
        assert row["downstream_macro"] == pytest.approx(want["downstream_macro"])
        if row["variant"] != "teacher":
            assert row["downstream_run_id"] == row["run_id"] + 500  # the latest fine-tune linked to this run
    assert markdown(summary(rows)) == markdown(summary(_runs()))


def _report(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "analysis.ablation_report", *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_the_table_is_regenerated_from_the_export_alone(database, mongo_url, tmp_path):  # noqa: F811
    """Through the command line and the real test database: the table read from the database, the one read back
    from its export with no database reachable, and the one from the CSV are the same table, the independent
    computation's; the export says what every run was (config, status, host, comment, final metrics, linked
    fine-tune, run id)."""
    _insert_sweep(database)
    export, csv = tmp_path / "runs.json", tmp_path / "runs.csv"
    live = _report("--sweep", "s1", "--url", mongo_url, "--db", database.name, "--export-out", str(export),
                   "--csv-out", str(csv))
    assert live.returncode == 0, live.stderr
    nowhere = {"KD_MONGO_URL": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"}  # no server: none is read
    again = _report("--records", str(export), env=nowhere)
    from_csv = _report("--csv", str(csv), env=nowhere)
    assert again.returncode == 0 and from_csv.returncode == 0, again.stderr + from_csv.stderr
    assert live.stdout == again.stdout == from_csv.stdout == markdown(summary(_runs())) + "\n"
    exported = json.loads(export.read_text())
    runs = exported["runs"]
    distills = {r["run_id"] for r in runs.values() if r["experiment"]["name"] == "distill"}
    assert distills == set(range(1, 10)) - {1, 2}  # runs 1-2 are the teacher's fine-tunes; not 98 or 99
    finetunes = {r["run_id"] for r in runs.values() if r["experiment"]["name"] == "finetune"}
    assert finetunes == {1, 2, 97} | {i + 500 for i in distills}  # every linked fine-tune, the superseded one too
    full_seed_1 = runs["distill 3"]
    stored = database.runs.find_one({"_id": 3})
    assert full_seed_1["config"] == stored["config"] and full_seed_1["status"] == "COMPLETED"
    assert full_seed_1["host"]["hostname"] == "vm" and full_seed_1["meta"]["comment"] == "kd-sweep sweep=s1 variant=full"
    assert full_seed_1["final_metrics"]["held_out_mlm_accuracy_student"] == {"step": 150, "value": 0.117}
    assert runs["finetune 503"]["config"]["distill_run_id"] == 3
    assert "sweep s1" in exported["what"] and database.name in exported["database"]
    host, port = database.client.address  # the server the runs were read from, not the project's default one
    assert exported["database"].startswith(f"mongodb://{host}:{port} ")


def test_records_without_a_completed_distillation_are_refused(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"what": "w", "database": "d", "runs": {}}))
    proc = _report("--records", str(path))
    assert proc.returncode != 0 and "no COMPLETED distillation run" in proc.stderr
    assert _report("--csv", str(path), "--export-out", str(tmp_path / "x.json")).returncode == 2  # needs --sweep


def test_the_docs_table_is_regenerated_from_the_committed_export():
    exports = sorted((PROJECT / "analysis" / "results").glob("ablation-*-runs.json"))
    assert exports, "the export of the ablation's runs is committed under analysis/results/"
    results = (PROJECT / "docs" / "results.md").read_text()
    runs = runs_from_records(json.loads(exports[-1].read_text())["runs"].values())
    assert markdown(summary(runs)) in results, (
        "docs/results.md's ablation table differs from `python -m analysis.ablation_report --records`")
    assert re.search(rf"analysis\.ablation_report --records {re.escape(str(exports[-1].relative_to(PROJECT)))}",
                     results)
    note = ablation_report.duplicates_note(runs)
    assert not note or note in results, "the runs the table leaves out are listed under it"


def test_odd_values_in_records_give_nan_or_are_not_linked_never_a_crash():
    """A null score is NaN; a run id given as text links; text that is no run id links nothing."""
    def record(run_id, experiment, config, **extra):
        return {"run_id": run_id, "status": "COMPLETED", "experiment": {"name": experiment}, "meta": {},
                "config": config, **extra}

    full = dict(VARIANTS["full"].updates)
    records = [
        record(1, "distill", {**full, "seed": 1},
               final_metrics={"held_out_mlm_accuracy_student": {"step": 9, "value": 0.1}}),
        record(2, "finetune", {"distill_run_id": "1", "seed": 1}, result={"macro_accuracy": None}),
        record(3, "finetune", {"distill_run_id": "run one", "seed": 1}, result={"macro_accuracy": 0.9}),
        record(4, "distill", {**full, "seed": 2}),  # no logged metric
        record(5, "finetune", {"distill_run_id": 4, "seed": 2}, result={"macro_accuracy": 0.7}),
    ]
    rows = runs_from_records(records).set_index("run_id")
    assert rows.loc[1, "downstream_run_id"] == 2 and math.isnan(rows.loc[1, "downstream_macro"])
    assert rows.loc[1, "held_out_accuracy"] == 0.1
    assert math.isnan(rows.loc[4, "held_out_accuracy"]) and rows.loc[4, "downstream_macro"] == 0.7


def test_a_file_that_is_no_export_is_refused_in_one_line(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"what": "not runs"}))
    proc = _report("--records", str(path))
    assert proc.returncode != 0 and "not a run export" in proc.stderr and "Traceback" not in proc.stderr
