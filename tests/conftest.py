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
