"""Access control for the embedded SecantusDB server: one user, created when the server first opens a data
directory, whose password lives in a file only its owner can read.

Why: the server listens on 127.0.0.1 only, but on a shared node every local user can connect to 127.0.0.1;
without access control any of them could read or change every run. SecantusDB 0.7.0b3 has MongoDB's
SCRAM-SHA-256 authentication (``secantusd-py --auth``) and its built-in roles: with ``--auth`` every command but
the handshake needs an authenticated user (checked by hand and in tests/test_experiments_signals_security.py).

How (:func:`kd_plugin.tracking.embedded_db.ensure_embedded_server` calls this under the data directory's lock):

* ``<data_dir>/credentials.json`` (mode 0600) holds ``{"user": "kd_plugin", "password": <256 random bits>}``;
  the database files (``<data_dir>/data/``, 0700) and the server's log (0600) are closed to other users too;
* the server always runs with ``--auth``, and every client the project makes (the experiments' observers, the
  import command, the analysis, a finetune run's lookup) connects with
  ``mongodb://kd_plugin:<password>@127.0.0.1:<port>/?authSource=admin`` (:attr:`EmbeddedServer.url`); what is
  printed is its masked form (``EmbeddedServer.display_url``);
* SecantusDB, unlike mongod, has no "localhost exception": the first user can only be created by a server that
  runs without ``--auth``. So a data directory without a credentials file (a new one, or one written by an older
  kd_plugin) is opened once without ``--auth`` on a fresh port, for as long as creating the user takes (well
  under a second), then restarted with ``--auth``. Any other user found then is removed, so nothing created
  meanwhile keeps access. A credentials file whose user the data does not know (``data/``
  replaced or restored) is repaired the same way, keeping the file's password.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

CREDENTIALS_FILE_NAME = "credentials.json"
USER = "kd_plugin"
AUTH_DB = "admin"
AUTHENTICATION_FAILED = 18  # MongoDB's error code for refused credentials
_TIMEOUT_MS = 5000


class CredentialsRefused(Exception):
    """The server does not accept the credentials file's user (its data does not know it)."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def url(self, host: str, port: int) -> str:
        """The URL a client connects with (holds the password: never print it, print ``mask_url`` of it)."""
        return (f"mongodb://{quote_plus(self.user)}:{quote_plus(self.password)}@{host}:{port}/"
                f"?authSource={AUTH_DB}")


def credentials_path(data_dir: Path) -> Path:
    return data_dir / CREDENTIALS_FILE_NAME


def read_credentials(data_dir: Path) -> Credentials | None:
    """The data directory's credentials, or None (no file, unreadable by this user, or not ours)."""
    try:
        stored = json.loads(credentials_path(data_dir).read_text())
        return Credentials(str(stored["user"]), str(stored["password"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def new_credentials() -> Credentials:
    return Credentials(USER, secrets.token_urlsafe(32))


def save_credentials(data_dir: Path, credentials: Credentials) -> None:
    """Write the credentials file, readable by its owner only (created 0600: never readable by others, not even
    for a moment), atomically."""
    path = credentials_path(data_dir)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"user": credentials.user, "password": credentials.password}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def close_to_others(*paths: Path) -> None:
    """Directories 0700, files 0600 (those that exist and belong to this user; others are left alone)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700 if path.is_dir() else 0o600)


def check_credentials(url: str) -> None:
    """Raise :class:`CredentialsRefused` if the server at ``url`` (credentials included) refuses them."""
    import pymongo
    from pymongo.errors import OperationFailure

    with pymongo.MongoClient(url, serverSelectionTimeoutMS=_TIMEOUT_MS, connectTimeoutMS=_TIMEOUT_MS) as client:
        try:
            client.admin.command("ping")
        except OperationFailure as exc:
            if exc.code == AUTHENTICATION_FAILED:
                raise CredentialsRefused(f"the server refuses user {USER!r} of {CREDENTIALS_FILE_NAME}") from None
            raise


def create_user(open_url: str, credentials: Credentials) -> list[str]:
    """On a server running WITHOUT ``--auth`` (``open_url``): make ``credentials`` its only user (role root),
    removing every other user (``admin.system.users`` lists those of every database). Returns the removed ones,
    for the server's log. (Roles need no cleaning: with no other user, nobody holds one.)"""
    import pymongo

    with pymongo.MongoClient(open_url, serverSelectionTimeoutMS=_TIMEOUT_MS, connectTimeoutMS=_TIMEOUT_MS) as client:
        admin = client[AUTH_DB]

        def users() -> list[tuple[str, str]]:
            return [(u["db"], u["user"]) for u in admin["system.users"].find({}, {"db": 1, "user": 1})]

        ours = (AUTH_DB, credentials.user)
        verb = "updateUser" if ours in users() else "createUser"
        admin.command(verb, credentials.user, pwd=credentials.password, roles=["root"])
        removed = []
        for db, user in users():
            if (db, user) != ours:
                client[db].command("dropUser", user)
                removed.append(f"{db}.{user}")
        if users() != [ours]:
            raise RuntimeError(f"could not make {USER!r} the only user of the embedded server (users: {users()})")
        return removed
