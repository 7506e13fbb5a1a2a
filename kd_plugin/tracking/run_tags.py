"""Labels attached to a run through Sacred's comment (``-c``/``--comment``, stored as ``meta.comment``).

The sweep command (``experiments/sweep.py``) tags each run ``kd-sweep sweep=<id> variant=<name>``: ``sweep``
groups the runs of one invocation (so a table never mixes two sweeps by accident) and ``variant`` names the
ablation variant it asked for; the analysis (``analysis/``) reads them back. Tags are ``key=value`` words; other
words are kept as free text. Values contain no spaces.
"""

from __future__ import annotations

import re

TAG_PREFIX = "kd-sweep"
_VALUE = re.compile(r"^[A-Za-z0-9_.:+-]+$")


def check_tag_value(value: str) -> str:
    if not _VALUE.match(value):
        raise ValueError(f"tag value {value!r}: use letters, digits and _ . : + - only (no spaces, no '=')")
    return value


def format_tags(**tags: str) -> str:
    """``format_tags(sweep="s1", variant="full")`` -> ``"kd-sweep sweep=s1 variant=full"``."""
    return " ".join([TAG_PREFIX] + [f"{key}={check_tag_value(str(value))}" for key, value in tags.items()])


def parse_tags(comment: str | None) -> dict[str, str]:
    """The ``key=value`` words of a comment (empty if none)."""
    tags: dict[str, str] = {}
    for word in (comment or "").split():
        key, sep, value = word.partition("=")
        if sep and key and value:
            tags[key] = value
    return tags


def tag_pattern(key: str, value: str) -> str:
    """A regular expression matching comments that carry ``key=value`` as a whole word."""
    return rf"(^|\s){re.escape(key)}={re.escape(check_tag_value(value))}(\s|$)"
