"""Captured output: progress bars collapsed like a terminal shows them, and the text bounded (head + tail)."""

from __future__ import annotations

import random
import re

from sacred.utils import apply_backspaces_and_linefeeds

from kd_plugin.tracking.output_budget import apply_terminal_controls, bound_text, make_output_filter

MARKER = re.compile(r"\[kd_plugin: (\d+) bytes of captured output cut here")


def test_terminal_controls_match_sacred_on_random_text():
    rng = random.Random(0)
    alphabet = ["a", "b", "é", "\r", "\b", "\n", " "]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert apply_terminal_controls(text) == apply_backspaces_and_linefeeds(text), repr(text)


def test_progress_bar_keeps_its_final_state():
    bar = "".join(f"\rstep {i}/1000" for i in range(1001)) + "\ndone\n"
    assert apply_terminal_controls("start\n" + bar) == "start\nstep 1000/1000\ndone\n"


def test_small_text_is_untouched():
    assert bound_text("hello\nworld\n", max_bytes=1000) == "hello\nworld\n"


def test_long_text_keeps_head_and_tail_within_budget():
    lines = [f"line {i:06d} " + "x" * 50 for i in range(100_000)]  # about 6 MB
    text = "\n".join(lines) + "\n"
    bounded = bound_text(text, max_bytes=100_000)
    assert len(bounded.encode()) <= 100_000
    assert bounded.startswith("line 000000 ")
    assert bounded.endswith(lines[-1] + "\n")
    marker_line = re.search(r"\n\[kd_plugin:[^\n]*\]\n", bounded).group(0)
    cut = int(MARKER.search(bounded).group(1))
    assert cut + len(bounded.encode()) - len(marker_line.encode()) == len(text.encode())  # kept + cut = all
    # the cut falls between whole lines
    before, after = bounded.split(marker_line)
    assert before.endswith("\n") and after.startswith("line ")


def test_filtering_again_keeps_one_marker_with_running_total():
    flt = make_output_filter(max_bytes=10_000)
    text, total = "", 0
    for chunk in range(50):  # what Sacred does at every heartbeat: filter(previous filtered text + new output)
        new = "".join(f"chunk {chunk} line {i}\n" for i in range(200))
        total += len(new.encode())
        text = flt(text + new)
        assert len(text.encode()) <= 10_000
    assert len(MARKER.findall(text)) == 1
    assert text.startswith("chunk 0 line 0\n")
    assert text.endswith("chunk 49 line 199\n")
    cut = int(MARKER.search(text).group(1))
    kept = len(text.encode()) - len(re.search(r"\n\[kd_plugin:[^\n]*\]\n", text).group(0).encode())
    assert cut + kept == total  # every byte is either kept or counted as cut


def test_multibyte_text_is_cut_on_valid_utf8():
    text = "äöü€😀\n" * 100_000
    bounded = bound_text(text, max_bytes=50_000)
    assert len(bounded.encode("utf-8")) <= 50_000
    bounded.encode("utf-8")  # no surrogate / broken character
