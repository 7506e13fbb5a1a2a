"""Which database the analysis reads: the same one the experiments write to.

Order, for the URL: the ``url`` argument, else ``$KD_MONGO_URL``, else the project's embedded SecantusDB server
(started or reused by :func:`kd_plugin.tracking.embedded_db.ensure_embedded_server`). For the database name:
the ``db`` argument, else ``$KD_MONGO_DB``, else ``kd_plugin``. A ready ``pymongo.database.Database`` can be
passed as ``db`` instead (the URL is then ignored).

The environment variables and default name are the tracking package's (:mod:`kd_plugin.tracking.locations`),
so the analysis reads where the experiments write. Credentials in a URL are never printed: messages show
:func:`redact_url`.
"""

from __future__ import annotations

import pymongo
from pymongo.database import Database

from kd_plugin.tracking.credentials import mask_url
from kd_plugin.tracking.locations import DEFAULT_DB_NAME, env_db_name, env_mongo_url
from kd_plugin.tracking.locations import ENV_MONGO_DB as ENV_DB
from kd_plugin.tracking.locations import ENV_MONGO_URL as ENV_URL

__all__ = ["DEFAULT_DB_NAME", "ENV_DB", "ENV_URL", "open_database", "redact_url", "resolve_db_name", "resolve_url"]

_CLIENTS: dict[str, pymongo.MongoClient] = {}  # one client (connection pool) per URL for the whole session


def redact_url(url: str) -> str:
    """``mongodb://user:secret@host`` -> ``mongodb://user:***@host``: safe to print."""
    return mask_url(url)


def resolve_url(url: str | None = None) -> str:
    """The MongoDB URL to read from (see the module docstring for the order)."""
    if url:
        return url
    env = env_mongo_url()
    if env:
        return env
    from kd_plugin.tracking.embedded_db import ensure_embedded_server  # lazy: only when nothing is configured

    return ensure_embedded_server().url


def resolve_db_name(db: str | None = None) -> str:
    return db or env_db_name() or DEFAULT_DB_NAME


def open_database(url: str | None = None, db: str | Database | None = None) -> Database:
    """The Sacred database (collections ``runs``, ``metrics``, ``fs.*``)."""
    if isinstance(db, Database):
        return db
    resolved = resolve_url(url)
    client = _CLIENTS.get(resolved)
    if client is None:
        client = pymongo.MongoClient(resolved, serverSelectionTimeoutMS=10_000, tz_aware=False)
        _CLIENTS[resolved] = client
    return client[resolve_db_name(db)]
