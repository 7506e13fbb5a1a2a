"""The paper's Table 4 from this project's runs: one command from the database, one from the committed CSV.

    python -m analysis.ablation_report --sweep abl-1130 --csv-out analysis/results/ablation-2026-11-30.csv
    python -m analysis.ablation_report --csv analysis/results/ablation-2026-11-30.csv

Both print the same markdown table (the README's): per variant, the number of seeds (the latest run of each
seed counts; the runs left out are listed below the table, with the verdicts that keeping the earliest run
instead would flip), the held-out masked-token accuracy of the student and the downstream macro accuracy (mean ± std
over seeds, in points), their difference to the full mixture, whether that difference exceeds two standard errors
(``|Δ| > 2 sqrt(s_v²/n_v + s_full²/n_full)``), and the paper's GLUE-macro difference beside it. The CSV holds
one row per distillation run (run ids of the distillation and of its downstream evaluation, variant, seed,
both scores), so the table can be checked, and recomputed, without the database.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from analysis.ablation import ablation_table
from kd_plugin.ablation import REFERENCE_VARIANT, VARIANTS

# Sanh et al. 2019, Table 4: GLUE macro-score difference to the triple loss with teacher initialisation.
PAPER_DELTA = {"full": 0.0, "no_ce": -2.96, "no_cos": -1.46, "no_mlm": -0.31, "random_init": -3.69}
SCORES = {  # CSV column -> runs-table column, both as fractions in [0, 1]
    "held_out_accuracy": "final.held_out_mlm_accuracy_student",
    "downstream_macro": "downstream.macro_accuracy",
}
CSV_COLUMNS = ["run_id", "downstream_run_id", "variant", "seed", *SCORES]
TEACHER_ROW = "teacher"  # the reference row: the teacher itself, fine-tuned the same way (not a distillation)
ROWS = [TEACHER_ROW, *VARIANTS]


def runs_from_database(sweep: str, url: str | None = None, db: str | None = None) -> pd.DataFrame:
    """One row per COMPLETED distillation run of ``sweep`` with the CSV's columns."""
    from analysis import load_runs

    runs = load_runs(url=url, db=db, sweep=sweep, status="COMPLETED")
    if runs.empty:
        raise SystemExit(f"no COMPLETED distillation run of sweep {sweep!r} in the database")
    table = pd.DataFrame({
        "run_id": runs.index.astype(int),
        "downstream_run_id": runs.get("downstream.run_id", pd.Series(pd.NA, index=runs.index)).to_numpy(),
        "variant": runs["variant"].to_numpy(),
        "seed": runs["seed"].astype(int).to_numpy(),
        **{name: runs[column].to_numpy() if column in runs else math.nan for name, column in SCORES.items()},
    })
    table = pd.concat([_teacher_rows(sweep, url, db, runs), table[table["variant"].isin(list(VARIANTS))]])
    order = table["variant"].map(ROWS.index)  # the teacher, the paper's row order, then seeds
    return table.assign(_order=order).sort_values(["_order", "seed"]).drop(columns="_order").reset_index(drop=True)


def _teacher_rows(sweep: str, url: str | None, db: str | None, distill_runs: pd.DataFrame) -> pd.DataFrame:
    """The reference: the sweep's fine-tunes of the teacher itself (``finetune.py -c "kd-sweep sweep=NAME
    variant=teacher" with model=<teacher> seed=N``), with the teacher's held-out masked-token accuracy as
    measured by the distillation runs of the same seed (one teacher and split; the masks follow the seed)."""
    from analysis import load_runs

    finetunes = load_runs(url=url, db=db, experiment="finetune", sweep=sweep, status="COMPLETED", downstream=False)
    if finetunes.empty or "variant" not in finetunes:
        return pd.DataFrame(columns=CSV_COLUMNS)
    finetunes = finetunes[finetunes["variant"] == TEACHER_ROW]
    # the held-out masks follow the run's seed: the teacher's accuracy of a seed is what that seed's runs measured
    teacher_column = distill_runs.get("final.held_out_mlm_accuracy_teacher", pd.Series(dtype=float))
    by_seed = teacher_column.groupby(distill_runs["seed"].astype(int)).median()
    seeds = finetunes["seed"].astype(int)
    return pd.DataFrame({
        "run_id": finetunes.index.astype(int), "downstream_run_id": finetunes.index.astype(int),
        "variant": TEACHER_ROW, "seed": seeds.to_numpy(),
        "held_out_accuracy": seeds.map(by_seed).to_numpy(dtype=float),
        "downstream_macro": finetunes["result.macro_accuracy"].to_numpy(),
    })


def latest_per_seed(runs: pd.DataFrame, keep: str = "last") -> pd.DataFrame:
    """One run per (variant, seed): the latest (highest run id; ``keep="first"``: the earliest). A seed run twice
    (a sweep restarted after a crash, a rerun) must not count twice in the mean or shrink the standard error."""
    return runs.sort_values("run_id").drop_duplicates(["variant", "seed"], keep=keep)


def duplicate_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs :func:`latest_per_seed` leaves out, with the run kept in their place (``kept_run_id``)."""
    kept = latest_per_seed(runs).set_index(["variant", "seed"])["run_id"]
    dropped = runs[~runs["run_id"].isin(kept)].sort_values(["variant", "seed", "run_id"])
    return dropped.assign(kept_run_id=[int(kept.loc[(v, s)]) for v, s in zip(dropped["variant"], dropped["seed"],
                                                                                  strict=True)])


def verdicts(table: pd.DataFrame) -> dict[tuple[str, str], bool]:
    """{(variant, score): whether its difference to full exceeds two standard errors} (where one is defined)."""
    out = {}
    for variant in table.index:
        for score in SCORES:
            d, se = table.loc[variant, f"{score} delta"], table.loc[variant, f"{score} se"]
            if variant not in (REFERENCE_VARIANT, TEACHER_ROW) and not math.isnan(se):
                out[(variant, score)] = bool(abs(d) > 2 * se)
    return out


def duplicates_note(runs: pd.DataFrame) -> str:
    """What the table left out and whether it matters: every duplicate run (a seed run more than once) named with
    the run kept instead, and the verdicts that keeping the earliest run of each seed would flip ("" if none)."""
    dropped = duplicate_runs(runs)
    if dropped.empty:
        return ""
    lines = [f"{len(dropped)} run(s) left out: their seed was run more than once, and the latest run of each seed "
             "counts:"]
    lines += [f"- {row.variant} seed {row.seed}: run {row.run_id} (run {row.kept_run_id} counts)"
              for row in dropped.itertuples()]
    latest, earliest = verdicts(summary(runs)), verdicts(summary(runs, keep="first"))
    flipped = [f"{variant} {score}" for (variant, score), beyond in latest.items()
               if earliest.get((variant, score)) not in (None, beyond)]
    lines.append("Keeping the earliest run of each seed instead would flip the > 2 SE verdict of: " + ", ".join(flipped)
                 if flipped else "Keeping the earliest run of each seed instead flips no > 2 SE verdict.")
    return "\n".join(lines)


def summary(runs: pd.DataFrame, keep: str = "last") -> pd.DataFrame:
    """Per variant (teacher, then the paper's order): n, mean and std (points) from
    :func:`analysis.ablation.ablation_table`, Δ to full and its standard error (``<score> se``); one run per
    seed (``keep``: the latest, or the earliest with "first")."""
    runs = latest_per_seed(runs, keep)
    points = runs.assign(**{score: 100 * runs[score].astype(float) for score in SCORES})
    table = ablation_table(points, group_by="variant", metrics=list(SCORES), reference=None)
    if REFERENCE_VARIANT not in table.index:
        raise SystemExit(f"no run of the reference variant {REFERENCE_VARIANT!r}: the differences need it")
    table = table.loc[[v for v in ROWS if v in table.index]].rename(columns={"n_seeds": "n"})
    counts = points.groupby("variant")[list(SCORES)].count()  # values per variant (a score may be missing)
    for score in SCORES:
        std, n = table[f"{score} std"], counts.loc[table.index, score]
        table[f"{score} delta"] = table[f"{score} mean"] - table.loc[REFERENCE_VARIANT, f"{score} mean"]
        variance_of_mean = std**2 / n
        table[f"{score} se"] = (variance_of_mean + variance_of_mean.loc[REFERENCE_VARIANT]) ** 0.5
    return table


def markdown(table: pd.DataFrame) -> str:
    def cell(mean: float, std: float) -> str:
        return f"{mean:.1f} ± {std:.1f}" if not math.isnan(std) else f"{mean:.1f}"

    def delta(variant: str, score: str) -> str:
        if variant in (REFERENCE_VARIANT, TEACHER_ROW):
            return "—"
        d, se = table.loc[variant, f"{score} delta"], table.loc[variant, f"{score} se"]
        if math.isnan(se):
            return f"{d:+.2f} (n < 2)"  # one seed on either side: no standard error to compare with
        beyond = "yes" if abs(d) > 2 * se else "no"
        return f"{d:+.2f} ({beyond})"

    lines = ["| variant | seeds | held-out masked-token acc. (%) | Δ (> 2 SE?) | downstream macro (%) | Δ (> 2 SE?) "
             "| paper Δ GLUE |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for variant, row in table.iterrows():
        lines.append(f"| {variant} | {int(row['n'])} | {cell(row['held_out_accuracy mean'], row['held_out_accuracy std'])} "
                     f"| {delta(variant, 'held_out_accuracy')} "
                     f"| {cell(row['downstream_macro mean'], row['downstream_macro std'])} "
                     f"| {delta(variant, 'downstream_macro')} "
                     f"| {f'{PAPER_DELTA[variant]:+.2f}' if variant in PAPER_DELTA and variant != REFERENCE_VARIANT else '—'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.ablation_report", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sweep", help="read the sweep's runs from the database (experiments/sweep.py --name)")
    source.add_argument("--csv", type=Path, help="read the per-run CSV written by --csv-out")
    parser.add_argument("--url", default=None, help="MongoDB URL (default: the project's rule, see tracking README)")
    parser.add_argument("--db", default=None, help="database name (default: KD_MONGO_DB, else kd_plugin)")
    parser.add_argument("--csv-out", type=Path, default=None, help="write the per-run rows here (with --sweep)")
    args = parser.parse_args(argv)
    if args.csv is not None:
        runs = pd.read_csv(args.csv)
    else:
        runs = runs_from_database(args.sweep, args.url, args.db)
        if args.csv_out is not None:
            args.csv_out.parent.mkdir(parents=True, exist_ok=True)
            runs[CSV_COLUMNS].to_csv(args.csv_out, index=False)
            print(f"wrote {args.csv_out} ({len(runs)} runs)", file=sys.stderr)
    print(markdown(summary(runs)))
    note = duplicates_note(runs)
    if note:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
