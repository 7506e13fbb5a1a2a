"""Passwords in URLs are masked wherever they could be printed or stored."""

from __future__ import annotations

import pytest

from kd_plugin.errors import ConfigError
from kd_plugin.tracking.credentials import has_credentials, mask_url, redact, shown_url
from kd_plugin.tracking.locations import check_mongo_url
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


def test_a_password_with_raw_at_colon_or_slash_is_masked_to_the_last_at_sign():
    # URL syntax wants them percent-encoded; pasted raw, the password still ends at the LAST '@' of the URL
    assert mask_url("mongodb://user:p@ss@host:27017") == "mongodb://user:***@host:27017"
    assert mask_url("mongodb://user:p@s:s/w@rd@host:27017/kd") == "mongodb://user:***@host:27017/kd"
    assert mask_url("mongodb://a@b.example:pw@host") == "mongodb://a@b.example:***@host"  # '@' in the user name
    assert mask_url("url 'mongodb://u:x@SECRET@h:1', then x@y") == "url 'mongodb://u:***@h:1', then x@y"
    assert has_credentials("mongodb://user:p@ss@host") and not has_credentials("mongodb://user@host")
    hidden, real = hide_url_passwords(["d.py", "with", "tracking.mongo_url=mongodb://u:p@SECRET@h:1"])
    assert hidden == ["d.py", "with", "tracking.mongo_url=mongodb://u:***@h:1"]
    assert real == {"mongodb://u:***@h:1": "mongodb://u:p@SECRET@h:1"}
    # not a URL at all (no scheme): everything before the last '@' may be secret
    assert shown_url("user:p@SECRET@host:27017") == "***@host:27017"


@pytest.mark.parametrize("url", ["mongodb://user:p@SECRET@host:27017", "mongodb://user:pa/SECRET@host",
                                 "user:SECRET@host:27017", "mongodb://user:SECRET@host:99999",
                                 "mongodb://user:SECRET@host/?authSource="])
def test_a_url_pymongo_cannot_parse_is_one_configuration_error_without_the_password(url):
    with pytest.raises(ConfigError) as err:
        check_mongo_url(url, "KD_MONGO_URL")
    assert err.value.key == "KD_MONGO_URL" and "SECRET" not in str(err.value)
    assert "percent-encoded" in str(err.value)
    check_mongo_url("mongodb://user:p%40ss@host:27017/kd?authSource=admin", "KD_MONGO_URL")  # encoded: fine
    check_mongo_url("mongodb+srv://user:pw@cluster0.example.net", "KD_MONGO_URL")  # no DNS look-up to check it
