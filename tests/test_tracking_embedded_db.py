"""The local SecantusDB server: start, reuse, stop/restart with persistence, one server under concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pymongo
import pytest

from kd_plugin.tracking import embedded_db
from kd_plugin.tracking.embedded_db import (
    EmbeddedServerUnavailable,
    ensure_embedded_server,
    find_server_executable,
    stop_embedded_server,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_the_server_executable_is_installed():
    """scripts/setup.sh installs SecantusDB; every test below needs it."""
    assert find_server_executable() is not None and find_server_executable().is_file()


def _server_pids(data_dir: Path) -> list[int]:
    """Live processes whose command line names ``<data_dir>/data`` as storage path (from /proc)."""
    storage = str(data_dir.resolve() / "data")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if storage.encode() in cmd and embedded_db._pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh data dir; afterwards every server on it is stopped, recorded or not."""
    monkeypatch.delenv("KD_SECANTUS_BIN", raising=False)
    monkeypatch.delenv("KD_DB_DIR", raising=False)
    path = tmp_path / "db"
    try:
        yield path
    finally:
        stop_embedded_server(path)
        for pid in _server_pids(path):  # belt and braces: a server the state file does not know about
            os.kill(pid, signal.SIGKILL)
        assert _server_pids(path) == []


def _client(server) -> pymongo.MongoClient:
    return pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000)


def test_start_serves_over_socket_in_separate_process(data_dir):
    t0 = time.monotonic()
    server = ensure_embedded_server(data_dir)
    elapsed = time.monotonic() - t0
    assert server.started is True
    assert elapsed < 15, f"start-up took {elapsed:.1f} s"
    assert server.display_url == f"mongodb://kd_plugin:***@127.0.0.1:{server.port}/?authSource=admin"  # --auth
    assert server.pid != os.getpid()
    assert _server_pids(data_dir) == [server.pid]
    assert (data_dir / "data").is_dir() and (data_dir / "server.log").is_file()
    state = json.loads((data_dir / "kd_server.json").read_text())
    assert (state["pid"], state["port"], state["url"]) == (server.pid, server.port, f"mongodb://127.0.0.1:{server.port}")

    with _client(server) as client:
        client.kd_test.runs.insert_one({"_id": 1, "config": {"alpha_ce": 5.0}})
        assert client.kd_test.runs.find_one({"config.alpha_ce": 5.0}) == {
            "_id": 1,
            "config": {"alpha_ce": 5.0},
        }


def test_second_call_reuses_running_server(data_dir):
    first = ensure_embedded_server(data_dir)
    second = ensure_embedded_server(data_dir)
    assert first.started is True
    assert second.started is False
    assert (second.pid, second.port, second.url) == (first.pid, first.port, first.url)
    assert embedded_db.get_running_server(data_dir) == second
    assert _server_pids(data_dir) == [first.pid]

    # a second data dir cannot take that port, and is never mistaken for the server already on it
    other = data_dir.parent / "other"
    with pytest.raises(EmbeddedServerUnavailable, match="already listens"):
        ensure_embedded_server(other, port=first.port, timeout=5)
    assert _server_pids(other) == []


def test_restart_after_stop_keeps_data(data_dir):
    first = ensure_embedded_server(data_dir)
    with _client(first) as client:
        client.kd_test.runs.insert_one({"_id": 7, "status": "COMPLETED"})

    assert stop_embedded_server(data_dir) is True
    assert not (data_dir / "kd_server.json").exists()
    assert not embedded_db._pid_alive(first.pid)
    assert embedded_db.get_running_server(data_dir) is None
    assert stop_embedded_server(data_dir) is False

    second = ensure_embedded_server(data_dir)
    assert second.started is True
    assert second.pid != first.pid
    with _client(second) as client:
        assert client.kd_test.runs.find_one({"_id": 7}) == {"_id": 7, "status": "COMPLETED"}


_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from kd_plugin.tracking.embedded_db import ensure_embedded_server

    data_dir, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    server = ensure_embedded_server(data_dir, timeout=30)
    print(json.dumps({"pid": server.pid, "port": server.port, "started": server.started}))
    """
)


def test_concurrent_callers_share_one_server(data_dir, tmp_path):
    n = 6
    go = tmp_path / "go"
    readies = [tmp_path / f"ready{i}" for i in range(n)]
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(data_dir), str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=PROJECT_ROOT,
        )
        for ready in readies
    ]
    try:
        deadline = time.monotonic() + 20
        while not all(r.exists() for r in readies):  # all workers imported: release them together
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [
                p.communicate() for p in procs if p.poll() is not None
            ]
            time.sleep(0.01)
        go.touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert len({(r["pid"], r["port"]) for r in results}) == 1, results
    assert sum(r["started"] for r in results) == 1, results
    assert _server_pids(data_dir) == [results[0]["pid"]]
    # the server outlived the processes that started / reused it
    server = embedded_db.get_running_server(data_dir)
    assert server is not None and server.pid == results[0]["pid"]


def test_missing_executable_raises_clear_error(data_dir, monkeypatch):
    missing = data_dir.parent / "nowhere" / "secantusd-py"
    monkeypatch.setenv("KD_SECANTUS_BIN", str(missing))
    assert find_server_executable() == missing
    with pytest.raises(EmbeddedServerUnavailable) as info:
        ensure_embedded_server(data_dir, timeout=5)
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message and "KD_SECANTUS_BIN" in message
    assert _server_pids(data_dir) == []


def test_server_that_exits_at_once_points_to_log(data_dir, tmp_path, monkeypatch):
    fake = tmp_path / "secantusd-py"
    fake.write_text("#!/bin/sh\necho 'boom: cannot open storage' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("KD_SECANTUS_BIN", str(fake))
    with pytest.raises(EmbeddedServerUnavailable) as info:
        ensure_embedded_server(data_dir, port=1, timeout=5)
    message = str(info.value)
    assert "exited with code 3" in message
    assert str(data_dir.resolve() / "server.log") in message and "boom: cannot open storage" in message
    assert not (data_dir / "kd_server.json").exists()


def test_default_locations(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_DB_DIR", str(tmp_path / "x"))
    assert embedded_db.default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("KD_DB_DIR")
    assert embedded_db.default_data_dir() == Path.home() / ".local/share/kd_plugin/secantusdb"
    monkeypatch.delenv("KD_SECANTUS_BIN", raising=False)
    assert find_server_executable() == PROJECT_ROOT / ".venv-secantus" / "bin" / "secantusd-py"
