"""Ablation tables and loss-curve plots from hand-made runs: mean ± std over seeds and Δ to the reference row,
checked against values computed here independently (Python's statistics module)."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import numpy as np
import pytest

from analysis import ablation_table, format_ablation, load_metrics, load_runs, plot_loss_curves
from kd_plugin.ablation import VARIANTS
from tests.test_analysis_runs import T0, database, insert_run  # noqa: F401  (database: a fixture)

# variant -> {seed: (downstream macro accuracy, final loss_mlm)}
SCORES = {
    "full": {1: (0.80, 2.0), 2: (0.78, 2.2), 3: (0.83, 1.9)},
    "no_ce": {1: (0.75, 2.5), 2: (0.77, 2.4), 3: (0.74, 2.9)},
    "no_cos": {1: (0.79, 2.1), 2: (0.76, 2.3)},
    "random_init": {7: (0.70, 3.5)},
}


@pytest.fixture
def ablation_runs(database):  # noqa: F811
    run_id, eval_id = 1, 1000
    for variant, seeds in SCORES.items():
        for seed, (accuracy, mlm) in seeds.items():
            insert_run(database, run_id, {**VARIANTS[variant].updates, "seed": seed},
                       start=T0 + dt.timedelta(minutes=run_id),
                       metrics={"loss_mlm": ([1, 2, 3], [mlm + 2.0, mlm - 0.5, mlm]),
                                "loss": ([1, 2, 3], [10.0 + seed, 9.0 + seed, 8.0 + seed])})
            insert_run(database, eval_id, {"distill_run_id": run_id}, experiment="finetune",
                       result={"macro_accuracy": accuracy, "tasks": {"mr": {"accuracy": accuracy}}})
            run_id, eval_id = run_id + 1, eval_id + 1
    insert_run(database, run_id, {"alpha_ce": 3.0, "seed": 1})  # no paper variant: left out of the table
    return database


def expected(variant: str, index: int) -> tuple[float, float, int]:
    values = [scores[index] for scores in SCORES[variant].values()]
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.mean(values), std, len(values)


def test_mean_std_over_seeds_and_difference_to_the_reference(ablation_runs):
    runs = load_runs(db=ablation_runs, status="COMPLETED")
    metrics = ["downstream.macro_accuracy", "final.loss_mlm"]
    with pytest.warns(UserWarning, match="1 run"):
        table = ablation_table(runs, group_by="variant", metrics=metrics, reference={"variant": "full"})

    assert list(table.index) == ["full", "no_ce", "no_cos", "random_init"]  # reference first
    assert list(table.columns) == [
        "n_seeds", "n_runs",
        "downstream.macro_accuracy mean", "downstream.macro_accuracy std", "Δ downstream.macro_accuracy",
        "final.loss_mlm mean", "final.loss_mlm std", "Δ final.loss_mlm",
    ]
    for index, metric in enumerate(metrics):
        ref_mean = expected("full", index)[0]
        for variant in SCORES:
            mean, std, n = expected(variant, index)
            row = table.loc[variant]
            assert row["n_seeds"] == n and row["n_runs"] == n
            assert row[f"{metric} mean"] == pytest.approx(mean, abs=1e-12)
            if math.isnan(std):
                assert np.isnan(row[f"{metric} std"])
            else:
                assert row[f"{metric} std"] == pytest.approx(std, abs=1e-12)
            assert row[f"Δ {metric}"] == pytest.approx(mean - ref_mean, abs=1e-12)
    assert table.loc["full", "Δ downstream.macro_accuracy"] == 0.0

    text = format_ablation(table, digits=3)
    mean, std, _ = expected("no_ce", 0)
    assert text.loc["no_ce", "downstream.macro_accuracy"] == f"{mean:.3f} ± {std:.3f}"
    assert text.loc["no_ce", "Δ downstream.macro_accuracy"] == f"{mean - expected('full', 0)[0]:+.3f}"
    assert text.loc["random_init", "final.loss_mlm"] == "3.500"  # a single seed: no ± part
    assert text.loc["full", "Δ final.loss_mlm"] == "+0.000"
    assert text["n_seeds"].tolist() == [3, 3, 2, 1]


def test_group_by_config_keys_with_a_label_reference(ablation_runs):
    runs = load_runs(db=ablation_runs, status="COMPLETED", student__layers="alternate", alpha_ce=5)
    table = ablation_table(runs, group_by=["alpha_cos", "student.layers"], metrics="final.loss_mlm",
                           reference=(1.0, "alternate"))
    assert list(table.index) == [(1.0, "alternate"), (0.0, "alternate")]
    full, no_cos = expected("full", 1)[0], expected("no_cos", 1)[0]
    assert table["Δ final.loss_mlm"].tolist() == pytest.approx([0.0, no_cos - full])

    by_dict = ablation_table(runs, ["alpha_cos", "student.layers"], "final.loss_mlm", reference={"alpha_cos": 0})
    assert by_dict.index[0] == (0.0, "alternate")
    assert "Δ final.loss_mlm" not in ablation_table(runs, "alpha_cos", "final.loss_mlm").columns
    with pytest.raises(ValueError, match="matches 2 rows"):
        ablation_table(runs, ["alpha_cos", "student.layers"], "final.loss_mlm", reference={"student.layers": "alternate"})
    with pytest.raises(KeyError, match="no_such_metric"):
        ablation_table(runs, "alpha_cos", "final.no_such_metric")


def test_loss_curves_png_per_variant(ablation_runs, tmp_path):
    runs = load_runs(db=ablation_runs, status="COMPLETED")
    curves = load_metrics(runs, names=["loss", "loss_mlm"], db=ablation_runs)
    path = plot_loss_curves(curves, by="variant", metric="loss_mlm", path=tmp_path / "plots" / "mlm.png")
    assert path.is_absolute() and path == (tmp_path / "plots" / "mlm.png").resolve()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    # the long-form points carry the variant, so the per-step mean over seeds is one groupby
    mlm = curves[curves["name"] == "loss_mlm"]
    line = mlm[mlm["variant"] == "no_ce"].groupby("step")["value"].mean()
    assert line.tolist() == pytest.approx([statistics.mean(s[1] + d for s in SCORES["no_ce"].values())
                                           for d in (2.0, -0.5, 0.0)])
    with pytest.raises(ValueError, match="loss_cos"):
        plot_loss_curves(curves, metric="loss_cos", path=tmp_path / "x.png")
