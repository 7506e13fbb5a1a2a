"""Which per-task correct counts a macro accuracy can come from: the check behind a "two runs scored exactly the
same" finding.

A macro accuracy over tasks with test sets of sizes n_1..n_k is (c_1/n_1 + ... + c_k/n_k) / k for integer
counts c_i. Two runs with the same value to the last digit either have the same counts on every task or hit
another combination with the same sum; listing the combinations tells which. With the four offline tasks' test
sizes (2113, 591, 426, 265) the combination is almost always unique, so equal macro values mean equal counts
on every task, and the counts of the other runs show how likely that is by chance.

    python -m analysis.macro_counts --csv analysis/results/ablation-2026-11-30.csv
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# Test-set sizes of the offline tasks at the default split (kd_plugin.downstream.tasks, split_seed 0), in the
# order of OFFLINE_TASKS; recorded by every finetune run as result.tasks.<task>.n_test.
OFFLINE_TEST_SIZES = {"mr_sentiment": 2113, "conll2010_uncertainty": 591, "bbc_topics": 426, "wiki_topics": 265}


def count_combinations(macro: float, sizes: Sequence[int], tolerance: float = 1e-12) -> list[tuple[int, ...]]:
    """Every tuple of correct counts (c_1..c_k), 0 <= c_i <= n_i, whose macro accuracy equals ``macro`` within
    ``tolerance``, in the order of ``sizes``. The largest task's count is solved for, the two smallest tasks'
    counts are a grid, the others are looped over (k <= 3: no loop)."""
    sizes = [int(n) for n in sizes]
    target = macro * len(sizes)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    solved, grid_tasks, looped = order[-1], order[:2][: len(sizes) - 1], order[2:-1]
    axes = np.meshgrid(*[np.arange(sizes[i] + 1) for i in grid_tasks], indexing="ij")  # each (n_a + 1, n_b + 1)
    grid_sum = sum(axis / sizes[i] for axis, i in zip(axes, grid_tasks, strict=True))  # (n_a + 1, n_b + 1)
    found = []
    for counts in itertools.product(*[range(sizes[i] + 1) for i in looped]):
        partial = grid_sum + sum(c / sizes[i] for c, i in zip(counts, looped, strict=True))  # (n_a + 1, n_b + 1)
        solved_count = np.rint((target - partial) * sizes[solved])  # (n_a + 1, n_b + 1)
        exact = ((solved_count >= 0) & (solved_count <= sizes[solved])
                 & (np.abs(partial + solved_count / sizes[solved] - target) <= tolerance))
        for index in np.argwhere(exact):
            combo = dict(zip(grid_tasks, (int(v) for v in index), strict=True))
            combo.update(zip(looped, counts, strict=True))
            combo[solved] = int(solved_count[tuple(index)])
            found.append(tuple(combo[i] for i in range(len(sizes))))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, required=True, help="a per-run CSV with a downstream_macro column")
    parser.add_argument("--column", default="downstream_macro")
    args = parser.parse_args(argv)
    runs = pd.read_csv(args.csv)
    tasks = list(OFFLINE_TEST_SIZES)
    print("| " + " | ".join([c for c in runs.columns if c != args.column]
                            + [f"{t} (of {OFFLINE_TEST_SIZES[t]})" for t in tasks]) + " |")
    print("|" + "---|" * (len(runs.columns) - 1 + len(tasks)))
    shown = [c for c in runs.columns if c != args.column]
    for i in range(len(runs)):  # by position: a row of mixed int and float columns would turn every int into float
        found = count_combinations(float(runs[args.column].iloc[i]), list(OFFLINE_TEST_SIZES.values()))
        cells = [" / ".join(str(combo[t]) for combo in found) or "none" for t in range(len(tasks))]
        print("| " + " | ".join([str(runs[c].iloc[i]) for c in shown] + cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
