"""The analysis reads the database the experiments write to, and never starts a server itself."""

from __future__ import annotations

import pytest

from analysis import connection
from kd_plugin.tracking import embedded_db


def test_without_a_database_it_says_how_to_start_one_and_starts_nothing(tmp_path, monkeypatch, db_name):
    for var in ("KD_MONGO_URL", "KD_MONGO_DB", "KD_SECANTUS_BIN"):
        monkeypatch.delenv(var, raising=False)
    data_dir = tmp_path / "embedded"
    monkeypatch.setenv("KD_DB_DIR", str(data_dir))

    with pytest.raises(connection.NoDatabase) as info:
        connection.open_database()
    message = str(info.value)
    assert "python -m kd_plugin.tracking.embedded_db start" in message and "KD_MONGO_URL=" in message
    assert not data_dir.exists() and embedded_db.get_running_server(data_dir) is None

    server = embedded_db.ensure_embedded_server(data_dir)  # started explicitly, as the message says
    try:
        database = connection.open_database(db=db_name)
        assert connection.resolve_url() == server.url and database.name == db_name
        database.runs.insert_one({"_id": 1})
        assert database.runs.count_documents({}) == 1
    finally:
        embedded_db.stop_embedded_server(data_dir)
