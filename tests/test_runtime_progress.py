"""Progress of long loops (kd_plugin.runtime.progress.track): a plain line at each tenth for log files, a tqdm bar,
or nothing; the items pass through unchanged. The counts of the lines are computed here independently."""

from __future__ import annotations

import re

import pytest

from kd_plugin.runtime.progress import track

LINE = re.compile(r"^work batch (\d+)/(\d+) \((\d+) %\)  \| \d+:\d\d:\d\d elapsed, (\?|\d+:\d\d:\d\d) left$")


def tenths(total: int) -> list[int]:
    """The item counts after which a line is due: the first count that reaches each tenth of ``total``."""
    return sorted({-(-total * k // 10) for k in range(1, 11)})


@pytest.mark.parametrize("total", [1, 3, 10, 25, 997])
def test_plain_lines_at_each_tenth_and_the_items_unchanged(total, capsys):
    items = list(track(iter(range(total)), total, "work", bar=False))
    assert items == list(range(total))
    lines = capsys.readouterr().out.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    done = [int(m.group(1)) for m in matches]
    assert done == tenths(total) and len(done) <= 10  # at most ten lines, never two for one count
    assert all(int(m.group(2)) == total for m in matches)
    assert (int(matches[-1].group(3)), matches[-1].group(4)) == (100, "0:00:00")  # the last says done


def test_no_progress_at_all_for_none_and_a_bar_on_stderr_for_true(capsys):
    assert list(track(range(7), 7, "quiet", bar=None)) == list(range(7))
    quiet = capsys.readouterr()
    assert quiet.out == quiet.err == ""
    assert list(track(range(7), 7, "barred", bar=True)) == list(range(7))
    drawn = capsys.readouterr()
    assert drawn.out == "" and "barred:" in drawn.err and "/7 [" in drawn.err  # a bar of 7 batches, on stderr
