"""The paper's Table 4 from this project's runs: from the database, from the committed export of those runs, or
from the per-run CSV.

    python -m analysis.ablation_report --sweep abl-1205 --export-out analysis/results/ablation-2026-12-05-runs.json
    python -m analysis.ablation_report --records analysis/results/ablation-2026-12-05-runs.json
    python -m analysis.ablation_report --csv analysis/results/ablation-2026-11-30.csv

All three print the same markdown table (docs/results.md's): per variant, the number of seeds (the latest run
of each seed counts; the runs left out are listed below the table, with the verdicts that keeping the earliest
run instead would flip), the held-out masked-token accuracy of the student and the downstream macro accuracy
(mean ± std over seeds, in points), their difference to the full mixture, whether that difference exceeds two
standard errors (``|Δ| > 2 sqrt(s_v²/n_v + s_full²/n_full)``), and the paper's GLUE-macro difference beside it.

The table is computed from run records in one way only (:func:`runs_from_records`): ``--sweep`` exports the
records of every run it reads (:mod:`analysis.export_records`' format: config, status, host, command and
comment, result, final metrics, run ids) and computes the table from that export; ``--export-out`` writes it,
and ``--records`` computes the table again from the file alone, without a database. The runs read: the
sweep's COMPLETED distillations, every COMPLETED fine-tune linked to one of them (``config.distill_run_id``;
the latest counts, as in :mod:`analysis.downstream`) and the sweep's fine-tunes of the teacher itself
(``-c "kd-sweep sweep=NAME variant=teacher"``). The CSV (``--csv-out``) holds one row per run: run ids of the
distillation and of its downstream evaluation, variant, seed, both scores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.ablation import ablation_table
from analysis.flatten import flatten
from kd_plugin.ablation import REFERENCE_VARIANT, VARIANTS, variant_of
from kd_plugin.tracking.run_tags import parse_tags

# Sanh et al. 2019, Table 4: GLUE macro-score difference to the triple loss with teacher initialisation.
PAPER_DELTA = {"full": 0.0, "no_ce": -2.96, "no_cos": -1.46, "no_mlm": -0.31, "random_init": -3.69}
SCORES = ("held_out_accuracy", "downstream_macro")  # both as fractions in [0, 1]
HELD_OUT_METRIC = "held_out_mlm_accuracy_student"  # a distillation's logged metric (its last value)
TEACHER_HELD_OUT_METRIC = "held_out_mlm_accuracy_teacher"
DOWNSTREAM_RESULT = "macro_accuracy"  # a fine-tune's result key
CSV_COLUMNS = ["run_id", "downstream_run_id", "variant", "seed", *SCORES]
TEACHER_ROW = "teacher"  # the reference row: the teacher itself, fine-tuned the same way (not a distillation)
ROWS = [TEACHER_ROW, *VARIANTS]


def _is(record: dict[str, Any], experiment: str) -> bool:
    """What the run is, not its display name (``-n NAME`` renames a run; its script stays)."""
    named = record.get("experiment") or {}
    return named.get("name") == experiment or named.get("mainfile") == f"{experiment}.py"


def _number(value: Any) -> float:
    """A score as a float; NaN for anything that is not a number (missing, null, text)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _final(record: dict[str, Any], metric: str) -> float:
    return _number((record.get("final_metrics") or {}).get(metric, {}).get("value"))


def _run_id(value: Any) -> int | None:
    """A fine-tune's ``distill_run_id`` as a run id: an int, or text of digits (as a command line gives it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


def _latest(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The most recent run (start time, then run id): a rerun's evaluation replaces the earlier one."""
    return max(records, key=lambda r: (str(r.get("start_time") or ""), int(r["run_id"])))


def runs_from_records(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per COMPLETED distillation of the paper's variants with the CSV's columns, and one per fine-tune
    of the teacher itself, from run records (:func:`analysis.export_records.export_run`): the variant from the
    config (:func:`kd_plugin.ablation.variant_of`), the held-out score from the run's last logged value, the
    downstream score from the latest COMPLETED fine-tune linked to it."""
    completed = [r for r in records if r.get("status") == "COMPLETED"]
    distills = [r for r in completed if _is(r, "distill")]
    finetunes = [r for r in completed if _is(r, "finetune")]
    linked: dict[int, list[dict[str, Any]]] = {}
    for record in finetunes:
        distill_run_id = _run_id((record.get("config") or {}).get("distill_run_id"))
        if distill_run_id is not None:
            linked.setdefault(distill_run_id, []).append(record)
    rows = []
    for record in distills:
        tags = parse_tags((record.get("meta") or {}).get("comment"))
        variant = variant_of(flatten(record.get("config") or {})) or tags.get("variant")
        if variant not in VARIANTS:
            continue
        finetune = _latest(linked[record["run_id"]]) if record["run_id"] in linked else None
        rows.append({"run_id": int(record["run_id"]),
                     "downstream_run_id": pd.NA if finetune is None else int(finetune["run_id"]),
                     "variant": variant, "seed": int(record["config"]["seed"]),
                     "held_out_accuracy": _final(record, HELD_OUT_METRIC),
                     "downstream_macro": math.nan if finetune is None
                     else _number((finetune.get("result") or {}).get(DOWNSTREAM_RESULT))})
    # the held-out masks follow the seed: the teacher's accuracy of a seed is what that seed's runs measured
    teacher_by_seed = pd.Series([_final(r, TEACHER_HELD_OUT_METRIC) for r in distills], dtype=float).groupby(
        [int(r["config"]["seed"]) for r in distills]).median() if distills else pd.Series(dtype=float)
    for record in finetunes:
        tags = parse_tags((record.get("meta") or {}).get("comment"))
        if tags.get("variant") == TEACHER_ROW and (record.get("config") or {}).get("distill_run_id") is None:
            seed = int(record["config"]["seed"])
            rows.append({"run_id": int(record["run_id"]), "downstream_run_id": int(record["run_id"]),
                         "variant": TEACHER_ROW, "seed": seed,
                         "held_out_accuracy": float(teacher_by_seed.get(seed, math.nan)),
                         "downstream_macro": _number((record.get("result") or {}).get(DOWNSTREAM_RESULT))})
    if not any(row["variant"] != TEACHER_ROW for row in rows):
        raise SystemExit("no COMPLETED distillation run of the paper's variants among the records")
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    order = table["variant"].map(ROWS.index)  # the teacher, the paper's row order, then seeds
    return table.assign(_order=order).sort_values(["_order", "seed", "run_id"]).drop(columns="_order").reset_index(
        drop=True)


def read_export(path: Path) -> list[dict[str, Any]]:
    """The run records of an export written by ``--export-out`` (or ``python -m analysis.export_records``)."""
    try:
        exported = json.loads(path.read_text())
        records = list(exported["runs"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise SystemExit(f"--records {path}: not a run export ({type(err).__name__}: {err}); write one with "
                         "--sweep NAME --export-out FILE") from None
    if not all(isinstance(r, dict) and "run_id" in r for r in records):
        raise SystemExit(f"--records {path}: not a run export (a run without run_id)")
    return records


def sweep_export(sweep: str, url: str | None = None, db: str | None = None) -> dict[str, Any]:
    """The export of every run the sweep's table reads (see the module docstring), labelled ``<experiment>
    <run id>``: one file that holds what each run was and what it scored."""
    from analysis.connection import open_database
    from analysis.export_records import export_from
    from analysis.query import build_run_query, experiment_condition
    from kd_plugin.tracking.run_tags import tag_pattern

    database = open_database(url, db)
    distill_ids = [doc["_id"] for doc in database.runs.find(build_run_query("distill", "COMPLETED", sweep=sweep),
                                                            {"_id": 1}).sort("_id", 1)]
    if not distill_ids:
        raise SystemExit(f"no COMPLETED distillation run of sweep {sweep!r} in database {database.name!r}")
    finetune_query = {"$and": [experiment_condition("finetune"), {"$or": [
        {"config.distill_run_id": {"$in": distill_ids + [str(i) for i in distill_ids]}},
        {"meta.comment": {"$regex": tag_pattern("sweep", sweep)}}]}], "status": "COMPLETED"}
    finetune_ids = [doc["_id"] for doc in database.runs.find(finetune_query, {"_id": 1}).sort("_id", 1)]
    labelled = {**{f"distill {i}": i for i in distill_ids}, **{f"finetune {i}": i for i in finetune_ids}}
    what = (f"the runs behind the ablation table of sweep {sweep} "
            "(python -m analysis.ablation_report --records <this file>)")
    return export_from(database, labelled, what, url)


def runs_from_database(sweep: str, url: str | None = None, db: str | None = None) -> pd.DataFrame:
    """The table's rows of ``sweep``, computed from its export (:func:`sweep_export`)."""
    return runs_from_records(sweep_export(sweep, url, db)["runs"].values())


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
    source.add_argument("--records", type=Path, help="read the runs' export written by --export-out")
    source.add_argument("--csv", type=Path, help="read the per-run CSV written by --csv-out")
    parser.add_argument("--url", default=None, help="MongoDB URL (default: the project's rule, see tracking README)")
    parser.add_argument("--db", default=None, help="database name (default: KD_MONGO_DB, else kd_plugin)")
    parser.add_argument("--export-out", type=Path, default=None,
                        help="write the export of every run the table reads here (with --sweep)")
    parser.add_argument("--csv-out", type=Path, default=None, help="write the per-run rows here")
    args = parser.parse_args(argv)
    if args.export_out is not None and args.sweep is None:
        parser.error("--export-out needs --sweep (it exports the runs read from the database)")
    if args.csv is not None:
        runs = pd.read_csv(args.csv)
    elif args.records is not None:
        runs = runs_from_records(read_export(args.records))
    else:
        exported = sweep_export(args.sweep, args.url, args.db)
        if args.export_out is not None:
            from analysis.export_records import write_export

            write_export(exported, args.export_out)
            print(f"wrote {args.export_out} ({len(exported['runs'])} runs)", file=sys.stderr)
        runs = runs_from_records(exported["runs"].values())
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
