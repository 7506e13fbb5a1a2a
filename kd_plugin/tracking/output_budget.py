"""Captured output that stays small: terminal control characters applied, then only a head and a tail kept.

Sacred stores a run's whole console output in the run document (``captured_out``), and MongoDB refuses
documents over 16 MB -- the most reported MongoObserver failure. Sacred calls the experiment's
``captured_out_filter`` on the accumulated text at every heartbeat, so the filter here:

1. interprets ``\\r`` and ``\\b`` like a terminal (a progress bar redrawn 10,000 times leaves one line), using
   Sacred's ``apply_backspaces_and_linefeeds`` on the lines that need it;
2. keeps the first ``max_bytes / 5`` bytes (start-up: config, versions, warnings) and the last bytes (the latest
   output), with a marker line in between that says how many bytes were cut.

The filter is stateless: the count of bytes already cut is read back from the marker, so filtering the
filtered text plus new output again keeps one marker with the running total.
"""

from __future__ import annotations

import re

from sacred.utils import apply_backspaces_and_linefeeds

DEFAULT_MAX_BYTES = 1_000_000  # far below MongoDB's 16 MB, leaves room for config, info and result
HEAD_FRACTION = 0.2
_MARKER_RESERVE = 160  # bytes set aside for the marker line itself
_MARKER = "\n[kd_plugin: {cut} bytes of captured output cut here to keep the run record bounded]\n"
_MARKER_RE = re.compile(r"\n\[kd_plugin: (\d+) bytes of captured output cut here to keep the run record bounded\]\n")
_LINE_SEARCH = 4096  # look this far for a line boundary to cut at, else cut mid-line


def apply_terminal_controls(text: str) -> str:
    """Same result as Sacred's ``apply_backspaces_and_linefeeds``, but only lines holding ``\\r``/``\\b`` are
    processed (that function walks every character in Python, too slow for a megabyte at each heartbeat)."""
    if "\r" not in text and "\b" not in text:
        return text
    lines = text.split("\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if "\r" in line or "\b" in line:
            # Alone, a line is "the last line" for Sacred's function, which keeps a trailing \r there so the
            # next chunk can overwrite it; that is right only for the real last line.
            lines[i] = apply_backspaces_and_linefeeds(line) if i == last else apply_backspaces_and_linefeeds(line + "\n")[:-1]
    return "\n".join(lines)


def bound_text(text: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """``text`` if it fits in ``max_bytes`` (UTF-8), else its head + a marker + its tail, at most ``max_bytes``."""
    if len(text) * 4 <= max_bytes:  # cannot exceed the budget: skip encoding
        return text
    match = _MARKER_RE.search(text)
    if match is None:
        data = text.encode("utf-8")
        if len(data) <= max_bytes:
            return text
        head = _cut_after_last_newline(data[: int(max_bytes * HEAD_FRACTION)])
        rest = data[len(head) :]
        cut_before = 0
    else:  # filtered before: keep that head, the tail is everything after the marker
        head = text[: match.start()].encode("utf-8")
        rest = text[match.end() :].encode("utf-8")
        cut_before = int(match.group(1))
        if len(head) + len(rest) + _MARKER_RESERVE <= max_bytes:
            return text
    tail_budget = max(0, max_bytes - len(head) - _MARKER_RESERVE)
    start = len(rest) - tail_budget
    newline = rest.find(b"\n", start, start + _LINE_SEARCH)
    if newline != -1:
        start = newline + 1  # start the tail at a line boundary
    head_text = head.decode("utf-8", errors="ignore")
    tail_text = rest[start:].decode("utf-8", errors="ignore")  # a split character at the cut is dropped
    return head_text + _MARKER.format(cut=cut_before + start) + tail_text


def _cut_after_last_newline(data: bytes) -> bytes:
    newline = data.rfind(b"\n", max(0, len(data) - _LINE_SEARCH))
    return data[: newline + 1] if newline != -1 else data


def make_output_filter(max_bytes: int = DEFAULT_MAX_BYTES):
    """A Sacred ``captured_out_filter``: terminal controls applied, then bounded to ``max_bytes``."""

    def filter_captured_output(text: str) -> str:
        return bound_text(apply_terminal_controls(text), max_bytes)

    filter_captured_output.max_bytes = max_bytes
    return filter_captured_output


filter_captured_output = make_output_filter()
