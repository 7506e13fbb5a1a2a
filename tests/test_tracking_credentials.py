"""Passwords in URLs are masked wherever they could be printed or stored."""

from __future__ import annotations

from kd_plugin.tracking.credentials import has_credentials, mask_url, redact
from kd_plugin.tracking.observers import hide_url_passwords


def test_mask_url_hides_only_the_password():
    assert mask_url("mongodb://alice:s3cr%40t@db.example:27017/kd?authSource=admin") == (
        "mongodb://alice:***@db.example:27017/kd?authSource=admin"
    )
    assert mask_url("mongodb+srv://bob:pw@cluster0.example.net") == "mongodb+srv://bob:***@cluster0.example.net"
    assert mask_url("mongodb://127.0.0.1:27017") == "mongodb://127.0.0.1:27017"
    assert mask_url("see mongodb://u:p@h:1 and https://x:y@z") == "see mongodb://u:***@h:1 and https://x:***@z"
    assert not has_credentials("mongodb://127.0.0.1:27017") and has_credentials("mongodb://u:p@h")


def test_redact_walks_nested_values():
    doc = {"a": ["mongodb://u:pw@h", ("x", "mongodb://v:pw2@h")], "b": {"c": "mongodb://w:pw3@h"}, "n": 3}
    assert redact(doc) == {
        "a": ["mongodb://u:***@h", ("x", "mongodb://v:***@h")],
        "b": {"c": "mongodb://w:***@h"},
        "n": 3,
    }


def test_command_line_password_hidden_before_sacred_parses():
    argv = ["distill.py", "-m", "x", "with", "smoke", "tracking.mongo_url='mongodb://u:pw@h:1/db'", "T=3"]
    hidden, real = hide_url_passwords(argv)
    assert hidden == ["distill.py", "-m", "x", "with", "smoke", "tracking.mongo_url='mongodb://u:***@h:1/db'", "T=3"]
    assert real == {"mongodb://u:***@h:1/db": "mongodb://u:pw@h:1/db"}
    # only config updates (after `with`) and only tracking.mongo_url are touched
    assert hide_url_passwords(["x.py", "tracking.mongo_url=mongodb://u:pw@h"])[0][1] == "tracking.mongo_url=mongodb://u:pw@h"
