"""Which database the analysis reads: the one the experiments write to, by the same rule.

The rule is :func:`kd_plugin.tracking.locations.resolve_database` (explicit argument > ``KD_MONGO_URL`` /
``KD_MONGO_DB`` > the embedded SecantusDB server / ``kd_plugin``; the analysis has no run config). For the URL:
the ``url`` argument, else ``$KD_MONGO_URL``, else the project's embedded SecantusDB server **if it is already
running**. The analysis only reads: it never starts that server. With nothing configured and no server
running, :class:`NoDatabase` says how to start it (``python -m kd_plugin.tracking.embedded_db start``) or how to
point at another database. For the database name: the ``db`` argument, else ``$KD_MONGO_DB``, else
``kd_plugin``. A ready ``pymongo.database.Database`` can be passed as ``db`` instead (the URL is then ignored).

Credentials in a URL are never printed: messages show :func:`redact_url`.
"""

from __future__ import annotations

import pymongo
from pymongo.database import Database

from kd_plugin.tracking.credentials import mask_url
from kd_plugin.tracking.locations import DEFAULT_DB_NAME, no_database_message, resolve_database
from kd_plugin.tracking.locations import ENV_MONGO_DB as ENV_DB
from kd_plugin.tracking.locations import ENV_MONGO_URL as ENV_URL
from kd_plugin.tracking.locations import resolve_db_name as _resolve_db_name

__all__ = [
    "DEFAULT_DB_NAME", "ENV_DB", "ENV_URL", "NoDatabase", "open_database", "redact_url", "resolve_db_name",
    "resolve_url",
]

_CLIENTS: dict[str, pymongo.MongoClient] = {}  # one client (connection pool) per URL for the whole session


class NoDatabase(RuntimeError):
    """Nothing configured and the embedded server is not running; the message says how to fix it."""


def redact_url(url: str) -> str:
    """``mongodb://user:secret@host`` -> ``mongodb://user:***@host``: safe to print."""
    return mask_url(url)


def resolve_url(url: str | None = None) -> str:
    """The MongoDB URL to read from (see the module docstring); raises :class:`NoDatabase` if there is none."""
    destination = resolve_database(url, embedded="running", explicit="url")  # a bad URL: ConfigError naming it
    if destination is None:
        raise NoDatabase(no_database_message("no database to read runs from"))
    return destination.url


def resolve_db_name(db: str | None = None) -> str:
    """The database name to read: ``db``, else ``$KD_MONGO_DB``, else ``kd_plugin``."""
    return _resolve_db_name(db)


def open_database(url: str | None = None, db: str | Database | None = None) -> Database:
    """The Sacred database (collections ``runs``, ``metrics``, ``fs.*``); never starts a server."""
    if isinstance(db, Database):
        return db
    resolved = resolve_url(url)
    client = _CLIENTS.get(resolved)
    if client is None:
        client = pymongo.MongoClient(resolved, serverSelectionTimeoutMS=10_000, tz_aware=False)
        _CLIENTS[resolved] = client
    return client[resolve_db_name(db)]
