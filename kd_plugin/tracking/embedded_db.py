"""Start, or reuse, one local SecantusDB server that stores the Sacred runs.

There is no ``mongod`` on these machines. SecantusDB (``secantusd-py``) is a MongoDB wire-protocol server;
it is GPL-licensed, so it lives in its own virtual environment and this module only *runs* it as a separate
process and talks to it over a TCP socket (pymongo). Nothing here imports it.

Where things live (``<data_dir>`` is :func:`default_data_dir` unless given):

* ``$KD_DB_DIR`` if set, else ``~/.local/share/kd_plugin/secantusdb`` -- the data directory;
* ``<data_dir>/data/``          the database files (WiredTiger); kept across server restarts;
* ``<data_dir>/server.log``     the server's stdout/stderr (appended, one header line per start);
* ``<data_dir>/kd_server.json`` state file ``{pid, port, url, auth, ...}`` of the running server (no password);
* ``<data_dir>/credentials.json`` the server's only user and password (0600; :mod:`kd_plugin.tracking.embedded_auth`);
* ``<data_dir>/.lock``          ``flock`` lock that serialises check-and-start between processes.

Access control: the server runs with ``--auth`` (SCRAM-SHA-256); :attr:`EmbeddedServer.url` carries the
credentials (never print it: ``display_url`` is the masked form), so other local users of a shared node can
neither read nor change the runs. See :mod:`kd_plugin.tracking.embedded_auth` for how the user is created.

The server is started detached (its own session), so it outlives the Python process that started it and
every later process (another experiment, a notebook, a second rank) reuses it through the state file. Only one
server can open a data directory at a time; :func:`ensure_embedded_server` guarantees that concurrent callers
end up sharing exactly one. Who starts it: the writers of runs (an experiment run, the import command) when it
is their destination by :func:`kd_plugin.tracking.locations.resolve_database`, or you with ``start``; readers
(the analysis, a finetune run's lookup of its distillation run) only use it while it runs. It is stopped only by
:func:`stop_embedded_server` (or the ``stop`` command)::

    python -m kd_plugin.tracking.embedded_db start    # start or reuse; prints data location and URL
    python -m kd_plugin.tracking.embedded_db url      # start or reuse; prints only the URL, WITH its password
                                                      # (for scripts: KD_MONGO_URL=$(...), omniboard --mu)
    python -m kd_plugin.tracking.embedded_db status   # does not start anything; exit code 1 if not running
    python -m kd_plugin.tracking.embedded_db stop

The server executable is found by :func:`find_server_executable` (``$KD_SECANTUS_BIN`` overrides it).
The server runs with ``<data_dir>`` as its working directory, so an optional ``<data_dir>/secantusd.toml``
is picked up by SecantusDB's own config discovery (as is ``~/.secantus/secantusd.toml``); host, port and
storage path are always given on the command line and win over any config file.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kd_plugin.runtime.paths import SECANTUS_VENV
from kd_plugin.runtime.ports import free_port
from kd_plugin.tracking import embedded_auth
from kd_plugin.tracking.credentials import mask_url

HOST = "127.0.0.1"
STATE_FILE_NAME = "kd_server.json"
LOG_FILE_NAME = "server.log"
LOCK_FILE_NAME = ".lock"
STORAGE_DIR_NAME = "data"
EXECUTABLE_NAME = "secantusd-py"

ENV_DATA_DIR = "KD_DB_DIR"
ENV_EXECUTABLE = "KD_SECANTUS_BIN"

_PING_TIMEOUT_MS = 1000
_POLL_INTERVAL_S = 0.05
_STOP_GRACE_S = 15.0
_PORT_ATTEMPTS = 3

# Popen objects of servers started by this process, so that stopping them from the same process can reap
# them (no zombie) and so that Popen.__del__ does not warn about a still-running child.
_CHILDREN: dict[int, subprocess.Popen] = {}


class EmbeddedServerUnavailable(Exception):
    """The local SecantusDB server could not be found, started or reached. The message says why."""


@dataclass(frozen=True)
class EmbeddedServer:
    """A running local server: connect with ``pymongo.MongoClient(server.url)``."""

    url: str  # with the credentials of <data_dir>/credentials.json when the server runs with --auth
    port: int
    data_dir: Path
    pid: int
    started: bool  # True if this call started it, False if an already running server was reused
    auth: bool = True  # False: a server started without --auth (by an older kd_plugin); anyone local may use it

    @property
    def display_url(self) -> str:
        """The URL with the password masked: the form to print."""
        return mask_url(self.url)

    @property
    def storage_path(self) -> Path:
        return self.data_dir / STORAGE_DIR_NAME

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE_NAME


# ----------------------------------------------------------------------------------------------- locations


def default_data_dir() -> Path:
    """``$KD_DB_DIR`` if set (and non-empty), else ``~/.local/share/kd_plugin/secantusdb``."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "kd_plugin" / "secantusdb"


def find_server_executable() -> Path | None:
    """Path of ``secantusd-py``, or None if it cannot be found.

    Order: ``$KD_SECANTUS_BIN`` if set (returned as given, even if it does not exist, so that a wrong
    setting is reported instead of silently ignored), else ``<project root>/.venv-secantus/bin/secantusd-py``
    if it exists, else ``secantusd-py`` on ``PATH``.
    """
    env = os.environ.get(ENV_EXECUTABLE)
    if env:
        return Path(env).expanduser()
    candidate = SECANTUS_VENV / "bin" / EXECUTABLE_NAME
    if candidate.is_file():
        return candidate
    found = shutil.which(EXECUTABLE_NAME)
    return Path(found) if found else None


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    path = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return path.resolve()


def _url(port: int) -> str:
    return f"mongodb://{HOST}:{port}"


# --------------------------------------------------------------------------------------- process helpers


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process."""
    if pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_our_server(pid: int, storage_path: Path) -> bool:
    """True if ``pid`` is alive and (where /proc tells) is a SecantusDB server on ``storage_path``.

    Guards against acting on a stale state file whose pid has been reused by an unrelated process.
    """
    if not _pid_alive(pid):
        return False
    cmd = _cmdline(pid)
    if cmd is None:
        return True
    return any("secantus" in part for part in cmd) and str(storage_path) in cmd


def _answers_as(url: str, pid: int, timeout_ms: int = _PING_TIMEOUT_MS) -> bool:
    """True if a server answers at ``url`` and it is process ``pid``.

    The pid comes from ``serverStatus`` (SecantusDB reports it like mongod does), so a different server that
    happens to listen on the port is never mistaken for ours; if a server does not report a pid, a successful
    ``ping`` is accepted. Raises :class:`~kd_plugin.tracking.embedded_auth.CredentialsRefused` if it answers but
    refuses the URL's credentials.
    """
    import pymongo  # project dependency; imported lazily so the CLI's --help stays fast
    from pymongo.errors import OperationFailure, PyMongoError

    client = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms
    )
    try:
        try:
            client.admin.command("ping")
        except OperationFailure as exc:  # it answers, but not to these credentials
            if exc.code == embedded_auth.AUTHENTICATION_FAILED:
                raise embedded_auth.CredentialsRefused(f"{mask_url(url)} refuses its credentials") from None
            raise
        try:
            reported = client.admin.command("serverStatus").get("pid")
        except PyMongoError:
            reported = None
        return reported is None or int(reported) == pid
    except PyMongoError:
        return False
    finally:
        client.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(log_path: Path, offset: int, lines: int = 15) -> str:
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in tail)


def _terminate(pid: int, grace: float = _STOP_GRACE_S) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; reap the process if it is our child."""
    child = _CHILDREN.pop(pid, None)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if child is not None:
            if child.poll() is not None:
                return
        elif not _pid_alive(pid):
            return
        time.sleep(_POLL_INTERVAL_S)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)
    else:
        deadline = time.monotonic() + 5
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL_S)


# ------------------------------------------------------------------------------------------ state + lock


def _read_state(data_dir: Path) -> dict | None:
    try:
        state = json.loads((data_dir / STATE_FILE_NAME).read_text())
        int(state["pid"]), int(state["port"]), str(state["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def _write_state(data_dir: Path, state: dict) -> None:
    path = data_dir / STATE_FILE_NAME
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def _remove_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE_NAME).unlink()


@contextlib.contextmanager
def _locked(data_dir: Path, timeout: float) -> Iterator[None]:
    """Exclusive ``flock`` on ``<data_dir>/.lock`` (released automatically if the holder dies)."""
    lock_path = data_dir / LOCK_FILE_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the server (O_CLOEXEC)
    except OSError as err:  # a file, or a folder this user cannot write: no server can keep its data there
        raise EmbeddedServerUnavailable(_unusable_data_dir(data_dir, err)) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EmbeddedServerUnavailable(
                        f"gave up after {timeout:.0f} s waiting for the lock {lock_path}: another process "
                        "is still starting or stopping the server there"
                    ) from None
                time.sleep(_POLL_INTERVAL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _unusable_data_dir(data_dir: Path, err: OSError) -> str:
    where = f"${ENV_DATA_DIR}" if os.environ.get(ENV_DATA_DIR) else "the default data directory"
    problem = "is a file, not a folder" if data_dir.is_file() else f"cannot be written ({err.strerror or err})"
    return f"its data directory {data_dir} ({where}) {problem}; set {ENV_DATA_DIR} to a folder this user can write"


def _client_url(data_dir: Path, state: dict) -> str:
    """The URL to connect with: the state's (no password), plus the credentials file's user and password when
    the server runs with --auth (and this user can read that file)."""
    credentials = embedded_auth.read_credentials(data_dir) if state.get("auth") else None
    return credentials.url(HOST, int(state["port"])) if credentials else str(state["url"])


def _server_from_state(data_dir: Path, state: dict, started: bool) -> EmbeddedServer:
    return EmbeddedServer(
        url=_client_url(data_dir, state),
        port=int(state["port"]),
        data_dir=data_dir,
        pid=int(state["pid"]),
        started=started,
        auth=bool(state.get("auth")),
    )


def _reusable(data_dir: Path, state: dict | None, wait: float) -> bool:
    """The recorded server is alive and answers as itself (retried for up to ``wait`` s while it is alive)."""
    if state is None:
        return False
    pid = int(state["pid"])
    if not _is_our_server(pid, data_dir / STORAGE_DIR_NAME):
        return False
    deadline = time.monotonic() + wait
    while True:
        try:
            if _answers_as(_client_url(data_dir, state), pid):
                return True
        except embedded_auth.CredentialsRefused:
            return False
        if time.monotonic() >= deadline or not _pid_alive(pid):
            return False
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------- public API


def get_running_server(data_dir: str | os.PathLike | None = None) -> EmbeddedServer | None:
    """The recorded server if it is alive and answers a ping; never starts one (``started`` is False)."""
    data = _resolve_data_dir(data_dir)
    state = _read_state(data)
    if _reusable(data, state, wait=0.0):
        return _server_from_state(data, state, started=False)
    return None


def ensure_embedded_server(
    data_dir: str | os.PathLike | None = None, port: int | None = None, timeout: float = 20.0
) -> EmbeddedServer:
    """Return the running server for ``data_dir``, starting one if needed.

    Reuses the server recorded in ``<data_dir>/kd_server.json`` if its pid is alive and it answers a ping
    (``port`` is then ignored: one server per data directory). Otherwise starts ``secantusd-py`` detached on
    ``port`` (a free one if None), waits up to ``timeout`` seconds for it to answer, and records it. The
    check-and-start runs under a file lock, so concurrent callers (threads or processes) share one server.

    Raises EmbeddedServerUnavailable if the executable is missing or the server does not come up.
    """
    data = _resolve_data_dir(data_dir)
    state = _read_state(data)
    if _reusable(data, state, wait=0.0):  # fast path without the lock: the common case once it runs
        return _server_from_state(data, state, started=False)
    with _locked(data, timeout=2 * timeout + 10):
        state = _read_state(data)
        if _reusable(data, state, wait=min(5.0, timeout)):
            return _server_from_state(data, state, started=False)
        if state is not None:
            pid = int(state["pid"])
            if _is_our_server(pid, data / STORAGE_DIR_NAME):
                raise EmbeddedServerUnavailable(
                    f"the SecantusDB server recorded in {data / STATE_FILE_NAME} (pid {pid}, {state['url']}) "
                    "is running but does not answer; see "
                    f"{data / LOG_FILE_NAME}, then stop it with `python -m kd_plugin.tracking.embedded_db "
                    f"stop --data-dir {data}`"
                )
            _remove_state(data)  # stale: the recorded process is gone
        server = _start_with_access_control(data, port, timeout)
        _write_state(
            data,
            {
                "pid": server.pid,
                "port": server.port,
                "url": _url(server.port),  # no password here: clients add the credentials file's
                "auth": server.auth,
                "data_dir": str(data),
                "storage_path": str(server.storage_path),
                "log": str(server.log_path),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        return server


def _start_with_access_control(data: Path, port: int | None, timeout: float) -> EmbeddedServer:
    """Start the server with --auth; first create its user if the data directory has no credentials file, or
    if its data does not know the file's user (see :mod:`kd_plugin.tracking.embedded_auth`)."""
    storage = data / STORAGE_DIR_NAME
    with contextlib.suppress(OSError):  # an unusable directory is reported by _start_server
        storage.mkdir(mode=0o700, parents=True, exist_ok=True)
    embedded_auth.close_to_others(storage, data / LOG_FILE_NAME)
    credentials = embedded_auth.read_credentials(data)
    if credentials is not None:
        try:
            return _start_server(data, port, timeout, credentials)
        except embedded_auth.CredentialsRefused:
            pass  # data/ replaced or restored: give it this file's user again
    _check_port_free(data, port)
    credentials = credentials or embedded_auth.new_credentials()
    opened = _start_server(data, None, timeout)  # without --auth, on a fresh port, only to create the user
    try:
        removed = embedded_auth.create_user(opened.url, credentials)
    except Exception as exc:  # noqa: BLE001 -- whatever failed, the server must not stay open
        raise EmbeddedServerUnavailable(f"could not create the user of the SecantusDB server on {data}: "
                                        f"{type(exc).__name__}: {exc}") from None
    finally:
        _terminate(opened.pid)
    embedded_auth.save_credentials(data, credentials)
    with contextlib.suppress(OSError), open(data / LOG_FILE_NAME, "ab") as log:
        log.write(f"--- kd_plugin: user {credentials.user!r} created (password in "
                  f"{embedded_auth.credentials_path(data)}); other users removed: {removed or 'none'}\n".encode())
    embedded_auth.close_to_others(storage, data / LOG_FILE_NAME)
    return _start_server(data, port, timeout, credentials)


def _check_port_free(data: Path, port: int | None) -> None:
    if port is not None and _port_open(port):
        raise EmbeddedServerUnavailable(
            f"cannot start SecantusDB for {data} on port {port}: something already listens on "
            f"{HOST}:{port}; pass another port or none (a free one is picked)"
        )


def _start_server(data: Path, port: int | None, timeout: float,
                  credentials: embedded_auth.Credentials | None = None) -> EmbeddedServer:
    """Start ``secantusd-py`` on ``data``: with ``--auth`` when ``credentials`` are given (raises
    :class:`~kd_plugin.tracking.embedded_auth.CredentialsRefused` if the server refuses them)."""
    exe = find_server_executable()
    if exe is None:
        raise EmbeddedServerUnavailable(
            f"SecantusDB server executable not found: no ${ENV_EXECUTABLE}, no "
            f"{SECANTUS_VENV / 'bin' / EXECUTABLE_NAME}, and no {EXECUTABLE_NAME} on PATH. "
            f"Install secantusdb in its own venv (pip install secantusdb==0.7.0b3) or set ${ENV_EXECUTABLE}."
        )
    source = f"${ENV_EXECUTABLE}" if os.environ.get(ENV_EXECUTABLE) else "found"
    if not exe.is_file():
        raise EmbeddedServerUnavailable(f"SecantusDB server executable {exe} ({source}) does not exist")
    if not os.access(exe, os.X_OK):
        raise EmbeddedServerUnavailable(f"SecantusDB server executable {exe} ({source}) is not executable")

    storage = data / STORAGE_DIR_NAME
    log_path = data / LOG_FILE_NAME
    try:
        storage.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab"):
            pass
    except OSError as err:
        raise EmbeddedServerUnavailable(_unusable_data_dir(data, err)) from None
    # The server runs under its own interpreter: do not leak this interpreter's module search path into it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}

    _check_port_free(data, port)
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        use_port = port if port is not None else free_port(HOST)
        cmd = [str(exe), "--host", HOST, "--port", str(use_port), "--storage-path", str(storage)]
        if credentials is not None:
            cmd.append("--auth")
        with open(log_path, "ab") as log:
            offset = log.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} kd_plugin (pid {os.getpid()}) starting: {' '.join(cmd)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(data),
                    env=env,
                    start_new_session=True,  # detached: survives this process and its terminal
                    close_fds=True,
                )
            except OSError as exc:
                raise EmbeddedServerUnavailable(f"could not run {exe}: {exc}") from exc
        _CHILDREN[proc.pid] = proc
        url = credentials.url(HOST, use_port) if credentials is not None else _url(use_port)
        try:
            failure = _wait_until_up(proc, url, use_port, timeout)
        except embedded_auth.CredentialsRefused:
            _terminate(proc.pid, grace=5.0)
            raise
        if failure is None:
            return EmbeddedServer(url=url, port=use_port, data_dir=data, pid=proc.pid, started=True,
                                  auth=credentials is not None)

        tail = _log_tail(log_path, offset)
        if proc.poll() is None:
            _terminate(proc.pid, grace=5.0)
        else:
            _CHILDREN.pop(proc.pid, None)
        if "Address already in use" in tail and attempt < attempts:
            continue  # someone grabbed the free port between our probe and the server's bind
        if "Device or resource busy" in tail:
            failure += (
                f"; another process already has {storage} open (a server not recorded in "
                f"{data / STATE_FILE_NAME}?) -- find it with `pgrep -af secantusd`"
            )
        elif "Address already in use" in tail:
            failure += f"; port {use_port} is already in use"
        raise EmbeddedServerUnavailable(
            f"SecantusDB server did not come up: {failure}. Command: {' '.join(cmd)}. "
            f"See {log_path}" + (f"; last lines:\n{tail}" if tail else "")
        )
    raise AssertionError("unreachable")


def _wait_until_up(proc: subprocess.Popen, url: str, port: int, timeout: float) -> str | None:
    """None once ``proc`` answers at ``url``, else a reason (process exited / timed out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return f"the server process exited with code {code}"
        if _port_open(port) and _answers_as(url, proc.pid):
            return None
        time.sleep(_POLL_INTERVAL_S)
    return f"no answer at {url} within {timeout:g} s"


def stop_embedded_server(data_dir: str | os.PathLike | None = None, timeout: float = 30.0) -> bool:
    """Stop the recorded server (SIGTERM, then SIGKILL after a grace period) and remove the state file.

    Returns True if a running server was stopped, False if none was recorded or it was already gone.
    """
    data = _resolve_data_dir(data_dir)
    if not data.is_dir():
        return False
    with _locked(data, timeout=timeout):
        state = _read_state(data)
        stopped = False
        if state is not None:
            pid = int(state["pid"])
            if _is_our_server(pid, data / STORAGE_DIR_NAME):
                _terminate(pid)
                stopped = True
            else:
                _CHILDREN.pop(pid, None)
        _remove_state(data)
        return stopped


# -------------------------------------------------------------------------------------------------- CLI


def _describe(server: EmbeddedServer) -> str:
    how = "started" if server.started else "running"
    return (
        f"SecantusDB {how} (pid {server.pid})\n"
        f"  url:      {server.display_url}\n"
        + (f"  access:   user and password in {embedded_auth.credentials_path(server.data_dir)} (only you can read it;"
           " `url` prints the full URL)\n" if server.auth else
           "  access:   NONE (started without --auth by an older kd_plugin): any local user can read and change "
           "the runs; `stop` it, and the next start sets a password\n")
        + f"  data dir: {server.data_dir}\n"
        f"  database: {server.storage_path}\n"
        f"  log:      {server.log_path}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kd_plugin.tracking.embedded_db",
        description="Manage the local SecantusDB (MongoDB wire-protocol) server that stores Sacred runs.",
    )
    parser.add_argument(
        "command",
        choices=["start", "stop", "status", "url"],
        help="start: start or reuse; stop; status: report without starting; url: start or reuse, print the URL "
        "with its password (for scripts)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help=f"default: ${ENV_DATA_DIR} or {default_data_dir()}"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port for a newly started server (default: free)"
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for start-up")
    args = parser.parse_args(argv)
    data = _resolve_data_dir(args.data_dir)

    try:
        if args.command == "start":
            print(_describe(ensure_embedded_server(data, port=args.port, timeout=args.timeout)))
        elif args.command == "url":
            server = ensure_embedded_server(data, port=args.port, timeout=args.timeout)
            print(f"SecantusDB data: {server.storage_path} (pid {server.pid}); the URL below holds the password of "
                  f"{embedded_auth.credentials_path(server.data_dir)}: keep it private", file=sys.stderr)
            print(server.url)
        elif args.command == "status":
            server = get_running_server(data)
            if server is None:
                print(f"SecantusDB not running (data dir: {data})")
                return 1
            print(_describe(server))
        else:
            stopped = stop_embedded_server(data)
            print(f"SecantusDB {'stopped' if stopped else 'was not running'} (data dir: {data})")
    except EmbeddedServerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
