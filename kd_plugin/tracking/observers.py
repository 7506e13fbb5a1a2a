"""Which observers a run gets: decided per run, on rank 0 only, from the command line, environment and config.

Where a run is saved follows the one rule of :func:`kd_plugin.tracking.locations.resolve_database`, first match
wins:

1. Sacred's own ``-m HOST:PORT:DB`` flag (the explicit argument of an experiment run): Sacred's MongoObserver,
   nothing added here;
2. ``KD_MONGO_URL`` (database ``KD_MONGO_DB``, else ``tracking.db_name``, else ``kd_plugin``);
3. the config: ``with tracking.mongo_url=mongodb://... tracking.db_name=...``;
4. the embedded default: a local SecantusDB server, started or reused (:mod:`kd_plugin.tracking.embedded_db`,
   data in ``KD_DB_DIR``): the experiments are the place that starts it;
5. if that server cannot be started: files (Sacred FileStorageObserver), with a loud warning and the command
   that imports them into MongoDB later.

2-4 use :class:`ResilientMongoObserver`. Before the run starts, its credentials are tried
(:mod:`kd_plugin.tracking.access`): a database that refuses them stops the run with one line naming
``KD_MONGO_URL`` or ``tracking.mongo_url`` and the user (exit status 2); one that does not answer is an outage,
and the run goes on as usual.

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

import math
import os
import sys

from pymongo.errors import ConfigurationError, InvalidName
from sacred import Experiment
from sacred.arg_parser import _convert_value
from sacred.observers import MongoObserver

from kd_plugin.errors import ConfigError, exit_on_config_error
from kd_plugin.runtime.launch import LaunchInfo
from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.access import is_refusal, refusal_error
from kd_plugin.tracking.credentials import has_credentials, mask_url
from kd_plugin.tracking.dead_runs import ENV_DEAD_AFTER
from kd_plugin.tracking.file_fallback import file_storage_fallback
from kd_plugin.tracking.locations import (
    ENV_MONGO_DB,
    ENV_MONGO_URL,
    env_db_name,
    env_mongo_url,
    pending_dir,
    resolve_database,
    resolve_db_name,
    url_key,
)
from kd_plugin.tracking.resilient_observer import ENV_FINAL_WAIT, ResilientMongoObserver

# Sacred's command line options that add observers.
OBSERVER_OPTIONS = ("--mongo_db", "--file_storage", "--sql", "--tiny_db", "--s3", "--gcs")
# Sacred's built-in commands that only inspect the experiment: they are not runs worth recording.
INSPECTION_COMMANDS = frozenset({"print_config", "print_dependencies", "save_config", "print_named_configs"})

TRACKING_CONFIG = {  # step 3 of the rule (kd_plugin.tracking.locations.resolve_database)
    "mongo_url": None,  # MongoDB URL for this run's record (KD_MONGO_URL wins if set); null = embedded server
    "db_name": None,  # database name (KD_MONGO_DB wins if set); null = kd_plugin
}


def _warn_about_ignored_config(tracking: dict, logger) -> None:
    """The environment wins over the config (the rule): say so when both are set."""
    if env_mongo_url() and tracking.get("mongo_url"):
        logger.warning("tracking: tracking.mongo_url is ignored because %s is set", ENV_MONGO_URL)
    if env_db_name() and tracking.get("db_name") and tracking["db_name"] != env_db_name():
        logger.warning("tracking: tracking.db_name is ignored because %s is set", ENV_MONGO_DB)


def _checked_observer(destination, **kwargs) -> ResilientMongoObserver:
    """The observer for ``destination``, after trying its credentials and its journal directory; raises
    ConfigError if the credentials are refused or the journal cannot be written."""
    key = url_key(destination.source)
    try:
        observer = ResilientMongoObserver(destination.url, destination.db_name, url_key=key, **kwargs)
    except ConfigurationError as exc:  # pymongo cannot even use the URL's credentials
        if is_refusal(exc):
            raise refusal_error(key, destination.display_url, destination.db_name, exc) from None
        raise
    except InvalidName as exc:  # KD_MONGO_DB=a/b: pymongo refuses the name before any server is asked
        raise ConfigError(ENV_MONGO_DB if env_db_name() else "tracking.db_name", f"{destination.db_name!r}: {exc}",
                          "a MongoDB database name: no '/', '\\', '.', '\"', '$', space or NUL") from None
    observer.check_access()
    observer.check_journal_dir()  # KD_RUNS_DIR: where the record goes while the database is away
    return observer


def make_observer(tracking: dict | None, logger):
    """The observer for one run (by :func:`resolve_database`, starting the embedded server if it is the
    destination), announcing where the run goes. Raises :class:`kd_plugin.errors.ConfigError` if the database
    refuses the URL's credentials."""
    tracking = tracking or {}
    _warn_about_ignored_config(tracking, logger)
    try:
        destination = resolve_database(tracking=tracking, embedded="start")
    except embedded_db.EmbeddedServerUnavailable as exc:
        return file_storage_fallback(
            f"the embedded SecantusDB server could not be started: {exc}", resolve_db_name(tracking=tracking)
        )
    server = destination.server
    if server is not None:
        observer = _checked_observer(destination)
        logger.info(
            "tracking: runs go to the embedded SecantusDB at %s (pid %d, %s), database %r; its data lives in %s "
            "(set %s to move it); stop it with `python -m kd_plugin.tracking.embedded_db stop`",
            server.display_url, server.pid, "started now" if server.started else "already running", destination.db_name,
            server.data_dir, embedded_db.ENV_DATA_DIR,
        )
        return observer
    # The import command always names the URL (masked): run from a shell without KD_MONGO_URL it would
    # otherwise write the run into the embedded server instead.
    observer = _checked_observer(destination, import_url_hint=destination.display_url)
    logger.info(
        "tracking: runs go to %s, database %r (from %s)", destination.display_url, destination.db_name, destination.source,
    )
    return observer


# Environment variables in seconds that the observer reads: (inclusive minimum or None for > 0, allowed).
SECONDS_VARIABLES = {ENV_FINAL_WAIT: (0.0, "seconds >= 0 the end of a run waits for the database (0 in CI)"),
                     ENV_DEAD_AFTER: (None, "seconds > 0 without a heartbeat before a RUNNING run counts as died (recorded FAILED)")}


def check_tracking_environment() -> None:
    """``KD_TRACKING_FINAL_WAIT`` and ``KD_DEAD_AFTER_S`` are numbers of seconds: a typo would otherwise stop the
    run at its start with a traceback, or only warn at each start."""
    for name, (minimum, allowed) in SECONDS_VARIABLES.items():
        text = os.environ.get(name)
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(name, f"{text!r} is not a number", allowed) from None
        if not math.isfinite(value) or (value < minimum if minimum is not None else value <= 0):
            raise ConfigError(name, f"{text!r} is out of range", allowed)


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
        chosen = [flag for flag in OBSERVER_OPTIONS if options.get(flag)]
        if chosen:  # e.g. -F <dir>: a file-only run, exactly what the user asked for (no embedded server)
            logger.info("tracking: Sacred's %s observer records this run (no other observer added)", chosen[0])
            return updates
        with exit_on_config_error():  # refused credentials: one line, exit status 2, before the run exists
            check_tracking_environment()
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
