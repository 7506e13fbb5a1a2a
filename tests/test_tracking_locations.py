"""The one rule for where runs go (kd_plugin.tracking.locations.resolve_database): explicit argument > KD_MONGO_URL /
KD_MONGO_DB > config tracking.* > the embedded server / kd_plugin, and who may start that server."""

from __future__ import annotations

import pytest

from kd_plugin.downstream.run_link import ModelSource, distill_database
from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.locations import (
    CONFIG_SOURCE,
    EMBEDDED_START_COMMAND,
    no_database_message,
    resolve_database,
    resolve_db_name,
)

ARG, ENV, CFG = "mongodb://arg:1", "mongodb://env:2", "mongodb://cfg:3"


@pytest.fixture(autouse=True)
def nothing_configured(tmp_path, monkeypatch):
    """No database in the environment; the embedded server's data directory is an empty tmp dir (not running)."""
    for var in ("KD_MONGO_URL", "KD_MONGO_DB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KD_DB_DIR", str(tmp_path / "embedded"))
    yield tmp_path / "embedded"


@pytest.mark.parametrize(
    ("url", "db_name", "env", "tracking", "expected"),
    [
        (ARG, "a", {"KD_MONGO_URL": ENV, "KD_MONGO_DB": "e"}, {"mongo_url": CFG, "db_name": "c"}, (ARG, "a", "argument")),
        (None, None, {"KD_MONGO_URL": ENV, "KD_MONGO_DB": "e"}, {"mongo_url": CFG, "db_name": "c"}, (ENV, "e", "KD_MONGO_URL")),
        (None, None, {}, {"mongo_url": CFG, "db_name": "c"}, (CFG, "c", CONFIG_SOURCE)),
        # URL and name are each resolved by the rule: the environment's name for the config's URL, and so on
        (None, None, {"KD_MONGO_DB": "e"}, {"mongo_url": CFG, "db_name": "c"}, (CFG, "e", CONFIG_SOURCE)),
        (None, "a", {"KD_MONGO_URL": ENV}, {"db_name": "c"}, (ENV, "a", "KD_MONGO_URL")),
        (ARG, None, {}, {}, (ARG, "kd_plugin", "argument")),
        (None, None, {"KD_MONGO_URL": ENV}, None, (ENV, "kd_plugin", "KD_MONGO_URL")),
    ],
)
def test_first_match_wins(monkeypatch, url, db_name, env, tracking, expected):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    destination = resolve_database(url, db_name, tracking)
    assert (destination.url, destination.db_name, destination.source) == expected
    assert destination.server is None
    assert resolve_db_name(db_name, tracking) == expected[1]


def test_the_embedded_server_is_started_only_when_asked(nothing_configured, monkeypatch):
    assert resolve_database() is None  # default: only a running server, and none runs
    assert resolve_database(embedded="never") is None
    assert not nothing_configured.exists()  # nothing was started, not even its data directory made
    message = no_database_message("no database to read runs from")
    assert EMBEDDED_START_COMMAND in message and "KD_MONGO_URL" in message and str(nothing_configured) in message

    monkeypatch.setenv("KD_SECANTUS_BIN", str(nothing_configured.parent / "missing" / "secantusd-py"))
    with pytest.raises(embedded_db.EmbeddedServerUnavailable, match="does not exist"):
        resolve_database(embedded="start")  # asked to start: it tries, and says why it cannot
    with pytest.raises(ValueError, match="embedded="):
        resolve_database(embedded="sometimes")


def test_a_finetune_run_looks_up_its_distill_run_by_the_same_rule(monkeypatch):
    tracking = {"mongo_url": CFG, "db_name": "c"}
    cfg = {"distill_db": {"url": ARG, "name": "a"}, "tracking": tracking}
    assert distill_database(ModelSource.from_dict(cfg)) == (ARG, "a")
    monkeypatch.setenv("KD_MONGO_URL", ENV)
    assert distill_database(ModelSource.from_dict({"distill_db": {"url": None, "name": None}, "tracking": tracking})) == (ENV, "c")
    monkeypatch.delenv("KD_MONGO_URL")
    assert distill_database(ModelSource.from_dict({"distill_db": {"url": None, "name": None}, "tracking": tracking})) == (CFG, "c")
    assert distill_database(ModelSource.from_dict({"distill_db": {"url": None, "name": "a"}, "tracking": {}})) == (None, "a")  # not started
