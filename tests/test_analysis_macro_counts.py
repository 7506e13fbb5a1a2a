"""analysis.macro_counts: the per-task correct counts a macro accuracy can come from (the check behind the
ablation's "two runs with the same downstream macro" finding, docs/results.md)."""

from __future__ import annotations

import itertools

import pandas as pd

from analysis.macro_counts import OFFLINE_TEST_SIZES, count_combinations, main


def brute_force(macro: float, sizes: list[int]) -> list[tuple[int, ...]]:
    return sorted(c for c in itertools.product(*[range(n + 1) for n in sizes])
                  if abs(sum(k / n for k, n in zip(c, sizes, strict=True)) - macro * len(sizes)) <= 1e-12)


def test_every_combination_is_found_as_by_brute_force():
    for sizes, counts in (([2, 4], (1, 2)), ([3, 5, 7], (2, 1, 6)), ([4, 6, 3, 5], (1, 3, 2, 5))):
        macro = sum(k / n for k, n in zip(counts, sizes, strict=True)) / len(sizes)
        found = count_combinations(macro, sizes)
        assert counts in found and found == brute_force(macro, sizes)
    assert count_combinations(0.5, [2, 4]) == [(0, 4), (1, 2), (2, 0)]


def test_the_offline_tasks_sizes_give_one_combination_for_a_typical_score():
    sizes = list(OFFLINE_TEST_SIZES.values())
    counts = (1643, 422, 399, 157)
    macro = sum(k / n for k, n in zip(counts, sizes, strict=True)) / 4
    assert count_combinations(macro, sizes) == [counts]


def test_cli_prints_the_counts_of_each_run(tmp_path, capsys):
    sizes = list(OFFLINE_TEST_SIZES.values())
    rows = [(1, (1643, 422, 399, 157)), (2, (1600, 430, 400, 150))]
    pd.DataFrame([{"run_id": run, "downstream_macro": sum(k / n for k, n in zip(c, sizes, strict=True)) / 4}
                  for run, c in rows]).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["--csv", str(tmp_path / "runs.csv")]) == 0
    out = capsys.readouterr().out
    assert "| 1 | 1643 | 422 | 399 | 157 |" in out and "| 2 | 1600 | 430 | 400 | 150 |" in out
