"""The Table-4 reproduction (docs/results.md): its numbers are recomputed here independently (Python's statistics
module) from hand-made runs, and the table in the README is regenerated from the committed per-run CSV."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

from analysis import ablation_report
from analysis.ablation_report import CSV_COLUMNS, markdown, runs_from_database, summary
from kd_plugin.ablation import VARIANTS
from tests.test_analysis_runs import database, insert_run  # noqa: F401  (database: a fixture)

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


def test_the_csv_round_trip_prints_the_same_table(tmp_path, capsys, monkeypatch):
    path = tmp_path / "runs.csv"
    monkeypatch.setattr(ablation_report, "runs_from_database", lambda sweep, url, db: _runs())
    assert ablation_report.main(["--sweep", "s", "--csv-out", str(path)]) == 0
    from_database = capsys.readouterr().out
    assert ablation_report.main(["--csv", str(path)]) == 0
    assert capsys.readouterr().out == from_database == markdown(summary(_runs())) + "\n"
    assert list(pd.read_csv(path).columns) == CSV_COLUMNS


def test_the_readme_table_is_the_committed_csv():
    csvs = sorted((PROJECT / "analysis" / "results").glob("ablation-*.csv"))
    assert csvs, "the ablation's per-run CSV is committed under analysis/results/"
    results = (PROJECT / "docs" / "results.md").read_text()
    table = markdown(summary(pd.read_csv(csvs[-1])))
    assert table in results, "docs/results.md's ablation table differs from `python -m analysis.ablation_report --csv`"
    assert re.search(rf"analysis\.ablation_report --csv {re.escape(str(csvs[-1].relative_to(PROJECT)))}", results)
    note = ablation_report.duplicates_note(pd.read_csv(csvs[-1]))
    assert not note or note in results, "the runs the table leaves out are listed under it"


def test_the_rows_come_from_the_sweeps_runs_in_the_database(database):  # noqa: F811
    """Distillation runs (variant from their config), their linked fine-tunes, the teacher's own fine-tunes."""
    run_id = 1
    for variant, seeds in RUNS.items():
        for seed, (held_out, macro) in seeds.items():
            comment = f"kd-sweep sweep=s1 variant={variant}"
            if variant == "teacher":
                insert_run(database, run_id, {"seed": seed, "model": "bert-tiny-prepared"}, experiment="finetune",
                           comment=comment, result={"macro_accuracy": macro})
            else:
                insert_run(database, run_id, {**VARIANTS[variant].updates, "seed": seed}, comment=comment,
                           metrics={"held_out_mlm_accuracy_student": ([150], [held_out]),
                                    # the teacher as measured by this seed's runs (the masks follow the seed)
                                    "held_out_mlm_accuracy_teacher": ([150], [RUNS["teacher"].get(seed, (0.3,))[0]])})
                insert_run(database, run_id + 500, {"distill_run_id": run_id, "seed": seed}, experiment="finetune",
                           comment=comment, result={"macro_accuracy": macro})
            run_id += 1
    insert_run(database, 99, {**VARIANTS["full"].updates, "seed": 1}, comment="kd-sweep sweep=other variant=full")
    rows = runs_from_database("s1", db=database)
    assert list(rows.columns) == CSV_COLUMNS
    assert len(rows) == sum(len(seeds) for seeds in RUNS.values())  # not the other sweep's run
    expected = _runs()
    for _, row in rows.iterrows():
        want = expected[(expected["variant"] == row["variant"]) & (expected["seed"] == row["seed"])].iloc[0]
        assert row["held_out_accuracy"] == pytest.approx(want["held_out_accuracy"])
        assert row["downstream_macro"] == pytest.approx(want["downstream_macro"])
        if row["variant"] != "teacher":
            assert row["downstream_run_id"] == row["run_id"] + 500  # the fine-tune linked to this run
    assert markdown(summary(rows)) == markdown(summary(_runs()))
