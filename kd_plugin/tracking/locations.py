"""Where runs go: the one rule that picks the database, and the local directories for what missed it.

**The rule** (:func:`resolve_database`; every reader and writer of runs uses it): the URL and the database name
are each taken from the first of

1. an explicit argument: a command's ``--url``/``--db``, a function's ``url``/``db`` argument, a finetune run's
   ``distill_db.url``/``distill_db.name``; for an experiment run, Sacred's own ``-m HOST:PORT:DB`` flag (Sacred's
   MongoObserver then records the run and this function is not asked at all);
2. the environment: ``KD_MONGO_URL`` / ``KD_MONGO_DB``;
3. the run's config: ``tracking.mongo_url`` / ``tracking.db_name``;
4. the default: the embedded SecantusDB server (:mod:`kd_plugin.tracking.embedded_db`, data in ``KD_DB_DIR``) /
   ``kd_plugin``.

Whether step 4 may *start* that server is the caller's explicit choice (``embedded="start"``: the experiments'
observers and the import command); by default it is only used when it is already running, so reading runs
(analysis, a finetune run's lookup of its distillation run) never starts a server.

Local directories:

* ``KD_RUNS_DIR``   local directory for what could not reach a database (default ``<project>/runs``):
  ``pending/``       journals of runs whose database went away, and Sacred's ``sacred_mongo_fail_*.pickle``;
  ``file_storage/``  Sacred FileStorageObserver runs, written when no database could be started at all.

Everything under ``KD_RUNS_DIR`` is brought into MongoDB by :func:`import_command`.

A URL the rule picks is parsed the way pymongo parses it (:func:`check_mongo_url`) before anything uses it: one
that pymongo cannot read (a raw ``@`` or ``:`` in the password, a port that is not a number, no ``mongodb://``)
is a :class:`~kd_plugin.errors.ConfigError` naming where it came from, with the password masked.
"""

from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pymongo.errors import ConfigurationError

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.paths import PROJECT_ROOT
from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.credentials import mask_url, shown_url

ENV_MONGO_URL = "KD_MONGO_URL"
ENV_MONGO_DB = "KD_MONGO_DB"
ENV_RUNS_DIR = "KD_RUNS_DIR"
DEFAULT_DB_NAME = "kd_plugin"
# Who chose a Destination's URL (``Destination.source``), for messages.
CONFIG_SOURCE = "config tracking.mongo_url"
CONFIG_URL_KEY = "tracking.mongo_url"  # the key to change when the config's URL is wrong
EMBEDDED_SOURCE = "embedded SecantusDB"
EMBEDDED_START_COMMAND = "python -m kd_plugin.tracking.embedded_db start"


def runs_dir() -> Path:
    """``$KD_RUNS_DIR`` if set (and non-empty), else ``<project>/runs`` (ignored by git)."""
    env = os.environ.get(ENV_RUNS_DIR)
    return Path(env).expanduser() if env else PROJECT_ROOT / "runs"


def pending_dir() -> Path:
    """Journals of runs not (yet) fully in their database, and Sacred's failure pickles."""
    return runs_dir() / "pending"


def file_storage_dir() -> Path:
    """Sacred FileStorageObserver runs written when no database could be reached at start."""
    return runs_dir() / "file_storage"


def check_runs_dir(directory: Path, purpose: str) -> None:
    """Raise :class:`ConfigError` naming ``KD_RUNS_DIR`` unless ``directory`` (under it) can be created and
    written: tried for real (a probe file made and removed), since permission bits do not tell for root, a
    read-only mount or a file in the way. ``purpose``: what the directory would hold, for the message."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".kd-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            ENV_RUNS_DIR, f"{directory} cannot be written ({type(exc).__name__}: {exc.strerror or exc}); it would hold "
            f"{purpose}", f"a writable directory: set {ENV_RUNS_DIR}=DIR (default {PROJECT_ROOT / 'runs'})",
        ) from None


def env_mongo_url() -> str | None:
    return os.environ.get(ENV_MONGO_URL) or None


def env_db_name() -> str | None:
    return os.environ.get(ENV_MONGO_DB) or None


@dataclass(frozen=True)
class Destination:
    """A MongoDB database that runs are saved in or read from; ``source`` says who chose the URL (for messages):
    the explicit argument's name, ``KD_MONGO_URL``, :data:`CONFIG_SOURCE` or :data:`EMBEDDED_SOURCE`."""

    url: str
    db_name: str
    source: str
    server: embedded_db.EmbeddedServer | None = None  # the embedded server, when it is the destination

    @property
    def display_url(self) -> str:
        return mask_url(self.url)


MONGO_URL_FORM = ("mongodb://[USER:PASSWORD@]HOST[:PORT][/DATABASE][?OPTIONS] (or mongodb+srv://), with '@', ':', "
                  "'/', '?' and '%' in the user name or password percent-encoded (urllib.parse.quote_plus)")


def check_mongo_url(url: str, key: str) -> None:
    """Raise :class:`ConfigError` (``key``: where the URL came from) if pymongo cannot parse ``url``. Parsed
    without contacting any server (no DNS look-up for ``mongodb+srv://``); the message never shows the password."""
    try:  # pymongo's parser without the SRV look-up; its messages never quote the URL's text
        from pymongo.uri_parser_shared import _validate_uri as parse
    except ImportError:  # pragma: no cover -- older pymongo: the public parser (SRV URLs are looked up)
        from pymongo.uri_parser import parse_uri as parse
    try:
        with warnings.catch_warnings():  # an unknown option only warns, in MongoClient too: leave it to it
            warnings.simplefilter("ignore")
            parse(url, validate=True, warn=True)
    except (ConfigurationError, ValueError) as exc:
        raise ConfigError(key, f"{shown_url(url)} is not a MongoDB URL pymongo can use ({exc})", MONGO_URL_FORM) from None


def url_key(source: str) -> str:
    """The key a user sets to change a destination's URL (``Destination.source`` -> ``tracking.mongo_url``)."""
    return CONFIG_URL_KEY if source == CONFIG_SOURCE else source


def resolve_db_name(db_name: str | None = None, tracking: Mapping[str, Any] | None = None) -> str:
    """The database name by the rule (module docstring): ``db_name``, ``KD_MONGO_DB``, ``tracking.db_name``,
    else ``kd_plugin``."""
    return db_name or env_db_name() or (tracking or {}).get("db_name") or DEFAULT_DB_NAME


def resolve_database(
    url: str | None = None,
    db_name: str | None = None,
    tracking: Mapping[str, Any] | None = None,
    *,
    embedded: Literal["running", "start", "never"] = "running",
    explicit: str = "argument",
) -> Destination | None:
    """Where runs go, by the one rule of this module: explicit argument > ``KD_MONGO_URL``/``KD_MONGO_DB`` >
    config ``tracking.mongo_url``/``tracking.db_name`` > the embedded SecantusDB server / ``kd_plugin``.

    URL and name are resolved independently (``KD_MONGO_DB`` names the database of a ``tracking.mongo_url``).
    ``explicit`` names the explicit argument in ``Destination.source`` (e.g. ``"--url"``). A URL pymongo cannot
    parse raises :class:`~kd_plugin.errors.ConfigError` naming its key (``explicit``, ``KD_MONGO_URL`` or
    ``tracking.mongo_url``).

    ``embedded`` says what happens when no URL is configured:

    * ``"running"`` (default): the embedded server if it is already running, else None; never starts it;
    * ``"start"``: start it, or reuse it (raises :class:`~kd_plugin.tracking.embedded_db.EmbeddedServerUnavailable`
      if it cannot be started);
    * ``"never"``: None (the caller leaves the choice to the process that writes the runs).
    """
    tracking = tracking or {}
    name = resolve_db_name(db_name, tracking)
    for given, source in ((url, explicit), (env_mongo_url(), ENV_MONGO_URL), (tracking.get("mongo_url"), CONFIG_SOURCE)):
        if given:
            check_mongo_url(str(given), url_key(source))
            return Destination(str(given), name, source)
    if embedded == "start":
        server = embedded_db.ensure_embedded_server()
    elif embedded == "running":
        try:
            server = embedded_db.get_running_server()
        except OSError:  # an unreadable data directory: no server to use
            server = None
    elif embedded == "never":
        server = None
    else:
        raise ValueError(f"embedded={embedded!r}: use 'running', 'start' or 'never'")
    return None if server is None else Destination(server.url, name, EMBEDDED_SOURCE, server=server)


def no_database_message(purpose: str) -> str:
    """Why :func:`resolve_database` found no database (nothing configured, embedded server not running), and the
    two ways out. ``purpose``: what needed it, e.g. ``"no database to read runs from"``."""
    return (
        f"{purpose}: {ENV_MONGO_URL} is not set and the embedded SecantusDB server (data in "
        f"{embedded_db.default_data_dir()}) is not running. Start it with `{EMBEDDED_START_COMMAND}`, or point at "
        f"another database: {ENV_MONGO_URL}=mongodb://HOST:PORT (and {ENV_MONGO_DB}=NAME), or pass the URL explicitly"
    )


def import_command(path: str | os.PathLike, url: str | None = None, db_name: str | None = None) -> str:
    """The shell command that imports ``path`` into MongoDB (``url`` must already be masked if shown)."""
    parts = ["python", "-m", "kd_plugin.tracking.import_runs", str(path)]
    if url:
        parts += ["--url", url]
    if db_name:
        parts += ["--db", db_name]
    return " ".join(shlex.quote(part) for part in parts)
