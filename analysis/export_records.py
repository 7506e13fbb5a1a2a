"""Export the database records behind a result, to commit beside it: the figures can then be checked (and
recomputed) without the database, which lives on one machine.

    python -m analysis.export_records --run distill=1 --run finetune_student=4 --run finetune_teacher=5 \
        --what "SmolLM2-135M -> 15 blocks (docs/results.md)" --out analysis/results/smollm2-135m-2026-12-05.json

Each ``--run LABEL=ID`` adds that run's record: experiment, host, config, status, start/stop time, result,
fail trace, the Sacred command and comment (``-c``: a sweep's tags), the run's ``info`` without bulky or
machine-private entries (metric ids, captured output) and the final value of every logged metric. Every URL is written with its password masked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
from pathlib import Path
from typing import Any

from analysis.connection import open_database, redact_url
from kd_plugin.tracking.credentials import mask_url

RECORD_FIELDS = ("experiment", "host", "config", "status", "start_time", "stop_time", "result", "fail_trace")
INFO_LEFT_OUT = ("metrics",)  # the ids of the metric documents: meaningless outside that database


def _plain(value: Any) -> Any:
    """JSON-able: datetimes as ISO text (UTC, as Sacred stores them), a password in any URL masked (a fine-tune's
    ``distill_db.url``, a run's ``tracking.mongo_url``: the export is meant to be committed), the rest as it is."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def export_run(database, run_id: int) -> dict[str, Any]:
    """One run's record (see the module docstring); a KeyError when the database has no such run."""
    doc = database.runs.find_one({"_id": run_id})
    if doc is None:
        raise KeyError(f"no run {run_id} in database {database.name!r}")
    record = {key: doc.get(key) for key in RECORD_FIELDS if key in doc}
    record["experiment"] = {k: v for k, v in (doc.get("experiment") or {}).items() if k in ("name", "mainfile")}
    # the command and comment only: Sacred's other meta entries are the command line's options (observer URLs)
    record["meta"] = {k: v for k, v in (doc.get("meta") or {}).items() if k in ("command", "comment")}
    record["host"] = {k: v for k, v in (doc.get("host") or {}).items() if k != "ENV"}
    record["info"] = {k: v for k, v in (doc.get("info") or {}).items() if k not in INFO_LEFT_OUT}
    record["final_metrics"] = {
        m["name"]: {"step": m["steps"][-1], "value": m["values"][-1]}
        for m in database.metrics.find({"run_id": run_id}, {"name": 1, "steps": 1, "values": 1}) if m.get("steps")
    }
    record["run_id"] = run_id
    return _plain(record)


def _server_of(database) -> str:
    """``mongodb://HOST:PORT`` of the server ``database`` is connected to: the open database says where it is,
    which need not be where the project's rule would point now (a test's server, a URL passed to open it)."""
    address = database.client.address  # None for a replica set with no primary: then the members it knows
    servers = [address] if address else sorted(database.client.nodes)
    return "mongodb://" + ",".join(f"{host}:{port}" for host, port in servers)


def export_from(database, runs: dict[str, int], what: str, url: str | None = None) -> dict:
    """The export of ``runs`` ({label: run id}) from an open database; ``url`` (password masked), else the
    server the database is connected to, names where it was."""
    where = f"{redact_url(url or _server_of(database))} ({socket.gethostname()}), database {database.name}"
    return {"what": what, "database": where, "runs": {label: export_run(database, run_id)
                                                     for label, run_id in runs.items()}}


def export_records(runs: dict[str, int], what: str, url: str | None = None, db: str | None = None) -> dict:
    return export_from(open_database(url, db), runs, what, url)


def write_export(exported: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(exported, indent=1, sort_keys=False) + "\n")


def _label_and_id(text: str) -> tuple[str, int]:
    label, sep, run_id = text.partition("=")
    if not sep or not label or not run_id.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: LABEL=RUN_ID, e.g. distill=12")
    return label, int(run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.export_records", description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=_label_and_id, action="append", required=True, metavar="LABEL=ID")
    parser.add_argument("--what", required=True, help="one line: what the runs are and where their figures are used")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--url", default=None, help="MongoDB URL (default: the project's rule)")
    parser.add_argument("--db", default=None, help="database name (default: KD_MONGO_DB, else kd_plugin)")
    args = parser.parse_args(argv)
    try:
        exported = export_records(dict(args.run), args.what, args.url, args.db)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    write_export(exported, args.out)
    print(f"wrote {args.out} ({len(args.run)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
