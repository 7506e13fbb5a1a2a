"""Which observers a run gets: decided per run, on rank 0 only, from the command line, environment and config.

Where a run is saved, first match wins:

1. Sacred's own ``-m HOST:PORT:DB`` flag: Sacred's MongoObserver, nothing added here;
2. ``KD_MONGO_URL`` (database ``KD_MONGO_DB``, default ``kd_plugin``);
3. the config: ``with tracking.mongo_url=mongodb://... tracking.db_name=...``;
4. the embedded default: a local SecantusDB server, started or reused (:mod:`kd_plugin.tracking.embedded_db`,
   data in ``KD_DB_DIR``);
5. if that server cannot be started: files (Sacred FileStorageObserver), with a loud warning and the command
   that imports them into MongoDB later.

2-4 use :class:`ResilientMongoObserver`. The database name follows the same order: ``KD_MONGO_DB``, then
``tracking.db_name``, then ``kd_plugin``.

Why hooks: observers must exist before a run starts, but the config (``tracking.*``) and the command line
options only become known inside ``ex.run_commandline()``. Sacred calls *option hooks* with the parsed
options, then *config hooks* with the final config and the command name, and only then copies
``ex.observers`` into the new run, so the config hook is the one place that sees everything in time.

Passwords: a ``with tracking.mongo_url=mongodb://user:pw@...`` update is rewritten in ``sys.argv`` to
``user:***@`` when the experiment is configured, before Sacred parses the command line, and the real URL is
kept aside for the observer. So Sacred never sees the password: ``print_config``, ``-p``, the stored config
and ``meta`` all show ``***``. (A URL with a password that reaches the config another way, e.g. a config
file, is still masked in everything the observer stores; prefer ``KD_MONGO_URL`` for secrets.)

Other ranks of a multi-process launch attach nothing, and their observer options (``-m``, ``-F``, ...) are
dropped by the option hook, so each run is recorded once, by rank 0.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from sacred import Experiment
from sacred.arg_parser import _convert_value
from sacred.observers import MongoObserver

from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.credentials import has_credentials, mask_url
from kd_plugin.tracking.file_fallback import file_storage_fallback
from kd_plugin.tracking.locations import (
    DEFAULT_DB_NAME,
    ENV_MONGO_DB,
    ENV_MONGO_URL,
    env_db_name,
    env_mongo_url,
    pending_dir,
)
from kd_plugin.tracking.resilient_observer import ResilientMongoObserver
from kd_plugin.training.launch_env import LaunchInfo

# Sacred's command line options that add observers.
OBSERVER_OPTIONS = ("--mongo_db", "--file_storage", "--sql", "--tiny_db", "--s3", "--gcs")
# Sacred's built-in commands that only inspect the experiment: they are not runs worth recording.
INSPECTION_COMMANDS = frozenset({"print_config", "print_dependencies", "save_config", "print_named_configs"})

TRACKING_CONFIG = {
    "mongo_url": None,  # MongoDB URL for this run's record (KD_MONGO_URL wins if set); null = embedded server
    "db_name": None,  # database name (KD_MONGO_DB wins if set); null = kd_plugin
}


@dataclass(frozen=True)
class Destination:
    """A MongoDB database to save runs in; ``source`` says who chose it (for messages)."""

    url: str
    db_name: str
    source: str

    @property
    def display_url(self) -> str:
        return mask_url(self.url)


def choose_database(tracking: dict | None) -> Destination | None:
    """The configured database (environment first, then ``tracking.*``), or None: use the embedded default."""
    tracking = tracking or {}
    db_name = env_db_name() or tracking.get("db_name") or DEFAULT_DB_NAME
    if env_mongo_url():
        return Destination(env_mongo_url(), db_name, ENV_MONGO_URL)
    if tracking.get("mongo_url"):
        return Destination(str(tracking["mongo_url"]), db_name, "config tracking.mongo_url")
    return None


def _embedded_destination(db_name: str, logger) -> Destination:
    """Start or reuse the local SecantusDB server (raises EmbeddedServerUnavailable)."""
    server = embedded_db.ensure_embedded_server()
    how = "started now" if server.started else "already running"
    logger.info(
        "tracking: runs go to the embedded SecantusDB at %s (pid %d, %s), database %r; its data lives in %s "
        "(set %s to move it); stop it with `python -m kd_plugin.tracking.embedded_db stop`",
        server.url, server.pid, how, db_name, server.data_dir, embedded_db.ENV_DATA_DIR,
    )
    return Destination(server.url, db_name, "embedded SecantusDB")


def make_observer(tracking: dict | None, logger):
    """The observer for one run, announcing where the run goes."""
    tracking = tracking or {}
    destination = choose_database(tracking)
    if destination is not None:
        if destination.source == ENV_MONGO_URL and tracking.get("mongo_url"):
            logger.warning("tracking: tracking.mongo_url is ignored because %s is set", ENV_MONGO_URL)
        if env_db_name() and tracking.get("db_name") and tracking["db_name"] != env_db_name():
            logger.warning("tracking: tracking.db_name is ignored because %s is set", ENV_MONGO_DB)
        logger.info(
            "tracking: runs go to %s, database %r (from %s)",
            destination.display_url, destination.db_name, destination.source,
        )
        # The import command needs --url only when the URL came from the config: the importer itself reads
        # KD_MONGO_URL, or else uses the embedded server.
        hint = destination.display_url if destination.source.startswith("config") else None
        return ResilientMongoObserver(destination.url, destination.db_name, import_url_hint=hint)
    db_name = env_db_name() or tracking.get("db_name") or DEFAULT_DB_NAME
    try:
        destination = _embedded_destination(db_name, logger)
    except embedded_db.EmbeddedServerUnavailable as exc:
        return file_storage_fallback(f"the embedded SecantusDB server could not be started: {exc}", db_name)
    return ResilientMongoObserver(destination.url, destination.db_name)


MONGO_URL_UPDATE = "tracking.mongo_url="


def hide_url_passwords(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` with the password of a ``tracking.mongo_url=...`` config update replaced by ``***``, and a map
    from each masked URL back to the real one."""
    hidden, real_urls, in_updates = [], {}, False
    for arg in argv:
        if in_updates and arg.startswith(MONGO_URL_UPDATE) and has_credentials(arg):
            url = str(_convert_value(arg[len(MONGO_URL_UPDATE) :]))  # as Sacred will read it (quotes removed)
            real_urls[mask_url(url)] = url
            arg = mask_url(arg)
        in_updates = in_updates or arg == "with"
        hidden.append(arg)
    return hidden, real_urls


def install_tracking(ex: Experiment, launch: LaunchInfo) -> None:
    """Add the ``tracking`` config block and the hooks that attach this module's observers to each run.

    Call before ``ex.run_commandline()``: it also hides URL passwords in ``sys.argv`` (see module docstring).
    """
    ex.add_config(tracking=dict(TRACKING_CONFIG))
    sys.argv, real_urls = hide_url_passwords(sys.argv)
    seen: dict[str, dict] = {"options": {}}
    attached: list = []  # observers this module added to ex.observers (removed again before the next run)

    @ex.option_hook
    def drop_observer_options_off_rank_0(options):
        if not launch.is_main:
            for flag in OBSERVER_OPTIONS:
                if options.get(flag):
                    options[flag] = None
        seen["options"] = options

    @ex.config_hook
    def attach_observers(config, command_name, logger):
        for observer in attached:
            if observer in ex.observers:
                ex.observers.remove(observer)
        attached.clear()
        tracking = dict(config.get("tracking") or {})
        if tracking.get("mongo_url"):
            tracking["mongo_url"] = real_urls.get(tracking["mongo_url"], tracking["mongo_url"])
        updates = {}
        if tracking.get("mongo_url") and has_credentials(str(tracking["mongo_url"])):
            # A password that came from a config scope (not the command line): mask it in the config too.
            updates = {"tracking": {"mongo_url": mask_url(str(tracking["mongo_url"]))}}
        options = seen["options"]
        if not launch.is_main or command_name in INSPECTION_COMMANDS or options.get("--unobserved"):
            return updates
        if options.get("--mongo_db"):
            logger.info("tracking: Sacred's -m flag is given: its MongoObserver records this run")
            return updates
        observer = make_observer(tracking, logger)
        ex.observers.append(observer)
        attached.append(observer)
        return updates

    @ex.pre_run_hook
    def keep_sacred_failure_pickles_importable(_run):
        # Sacred's own MongoObserver (-m) pickles a run it could not save; put it where the importer looks.
        for observer in _run.observers:
            if isinstance(observer, MongoObserver) and not observer.failure_dir:
                observer.failure_dir = str(pending_dir())
