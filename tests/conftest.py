"""Shared fixtures: a real MongoDB wire-protocol server (SecantusDB) for the tests that check what is saved."""

from __future__ import annotations

import os
import uuid

import pytest

from kd_plugin.tracking.embedded_db import (
    EmbeddedServerUnavailable,
    ensure_embedded_server,
    stop_embedded_server,
)


@pytest.fixture(scope="session", autouse=True)
def no_user_database(tmp_path_factory):
    """No test reads or writes the user's runs: ``KD_MONGO_URL``/``KD_MONGO_DB`` are unset and the embedded
    server's data directory (``KD_DB_DIR``) is a fresh one for the session, so a default that reached for the
    user's embedded server (running or not on this machine) behaves as on a clean CI machine. A server a test
    starts there by default is stopped at the end. Tests of the default locations set their own environment."""
    saved = {key: os.environ.get(key) for key in ("KD_MONGO_URL", "KD_MONGO_DB", "KD_DB_DIR")}
    data_dir = tmp_path_factory.mktemp("default-embedded-db")
    os.environ.pop("KD_MONGO_URL", None)
    os.environ.pop("KD_MONGO_DB", None)
    os.environ["KD_DB_DIR"] = str(data_dir)
    try:
        yield data_dir
    finally:
        stop_embedded_server(data_dir)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory):
    """URL of the session's test database server.

    ``$KD_TEST_MONGO_URL`` when set (``scripts/test.sh`` starts an in-memory SecantusDB for the session);
    otherwise a SecantusDB server started here on a temporary data directory and stopped at the end.
    """
    url = os.environ.get("KD_TEST_MONGO_URL")
    if url:
        yield url
        return
    data_dir = tmp_path_factory.mktemp("secantusdb")
    try:
        server = ensure_embedded_server(data_dir)
    except EmbeddedServerUnavailable as exc:
        pytest.fail(f"no MongoDB server for the tests (run them with scripts/test.sh): {exc}")
    try:
        yield server.url
    finally:
        stop_embedded_server(data_dir)


@pytest.fixture
def db_name() -> str:
    """A database name no other test uses (the server is shared by the whole session)."""
    return f"test_{uuid.uuid4().hex[:16]}"
