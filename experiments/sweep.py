"""Run the DistilBERT paper's ablation (Table 4) over several seeds: one ``experiments/distill.py`` run per
variant and seed, then read the table with ``analysis/ablation.ipynb``.

    python experiments/sweep.py --seeds 1 2 3                          # all variants, distill.py defaults
    python experiments/sweep.py --seeds 1 2 3 smoke max_steps=50       # extra `with` updates for every run
    python experiments/sweep.py --seeds 1 2 --variants full no_ce --parallel 2 --dry-run
    python experiments/sweep.py --seeds 1 -- -l WARNING                # after `--`: Sacred options for distill.py
    python experiments/sweep.py --seeds 1 2 3 --finetune               # each run then fine-tuned downstream
    python experiments/sweep.py --seeds 1 --finetune --finetune-update threads=1   # `with` updates for finetune.py

Variants (``kd_plugin/ablation.py``, shared with the analysis): ``full`` (alpha_ce=5, alpha_mlm=2, alpha_cos=1),
``no_ce``, ``no_cos``, ``no_mlm`` (that weight set to 0) and ``random_init`` (``student.layers=random_init``).
``--objective causal_lm`` runs DistilGPT2's set instead (``full`` = alpha_ce=5, alpha_clm=2, alpha_cos=1;
``no_ce``, ``no_cos``, ``no_clm``, ``random_init``), each run starting from the ``causal_lm`` named config
(``python experiments/sweep.py --objective causal_lm --seeds 1 2 causal_smoke`` for a tiny random GPT-2).
Each run sets all three loss weights explicitly, so a change of distill.py's defaults cannot change the
ablation; updates of those weights, of ``seed`` or ``student.layers=random_init`` are refused here.

How runs are recognised later: the analysis names a run's variant from its *config*
(``kd_plugin.ablation.variant_of``), so the table does not depend on labels. In addition every run carries the
Sacred comment ``kd-sweep sweep=<sweep id> variant=<name>`` (``-c``, stored as ``meta.comment``), so one sweep's
runs can be selected: ``load_runs(sweep="<sweep id>")`` or ``KD_SWEEP=<sweep id>`` for the notebook.

Database: the rule of ``kd_plugin.tracking.locations.resolve_database`` with ``--mongo-url``/``--db`` as the
explicit argument: ``--mongo-url``/``--db``, else ``$KD_MONGO_URL``/``$KD_MONGO_DB``, else distill.py's own
default (its config, else the embedded server, which distill.py starts). They reach the runs as
``KD_MONGO_URL``/``KD_MONGO_DB`` in their environment, the project's tracking route (resilient observer); a
password in the URL is never printed.

Each run's console output goes to ``<log dir>/<variant>-seed<seed>.log`` (appended to, never replaced); with
``--output-root DIR`` each run writes to ``DIR/<variant>-seed<seed>/`` (its ``output_dir``) and the logs to
``DIR/logs/``, else the runs use distill.py's own output directories and the logs go to
``outputs/sweeps/<sweep id>/``.

Running a sweep again with the same ``--output-root``: a run folder that holds an earlier run's results
(checkpoints, ``metrics.jsonl``, ``student/``) would be overwritten, so the sweep refuses before it starts
anything, with one line naming those folders (exit status 2; ``--dry-run`` checks the same). ``--resume``
continues that sweep instead: a run whose exported student's card says it reached its last step is skipped
(and only fine-tuned with ``--finetune`` if its card has no downstream scores yet), an interrupted one (a
checkpoint, no finished student) continues from its last checkpoint (``resume=<its folder>``, a new record
linked to the interrupted one), a folder not used yet runs as usual; a folder with results but no checkpoint to
resume is refused (move it away). The updates and seeds must be those of the first sweep: distill.py refuses a
checkpoint of another batch plan, seed or schedule.
With ``--finetune`` every distillation that succeeds is followed by ``experiments/finetune.py with
distill_run_id=<its run id> seed=<the same seed>`` (the downstream evaluation of its student, saved in the same
database and linked to the run, so ``load_runs`` and the ablation table show the downstream macro beside it); its
log is ``<variant>-seed<seed>-finetune.log``.
The exit status is 0 only if every run succeeded. Ctrl-C, SIGTERM or SIGHUP (a closed terminal) stops the running
runs (each gets one SIGINT, so Sacred records it as INTERRUPTED), starts no more, and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from kd_plugin.ablation import RANDOM_INIT, VARIANT_SETS, WEIGHT_KEYS  # noqa: E402

CAUSAL_NAMED_CONFIG = "causal_lm"  # what `--objective causal_lm` puts before the user's updates
ALL_VARIANT_NAMES = list(dict.fromkeys(name for variants in VARIANT_SETS.values() for name in variants))
from kd_plugin.errors import ConfigError  # noqa: E402
from kd_plugin.export.model_card import read_model_card  # noqa: E402
from kd_plugin.runtime.paths import EXPERIMENTS, OUTPUTS, PROJECT_ROOT  # noqa: E402
from kd_plugin.runtime.run_folder import STUDENT, earlier_results, latest_checkpoint  # noqa: E402
from kd_plugin.tracking.credentials import mask_url as redact_url  # noqa: E402
from kd_plugin.tracking.locations import DEFAULT_DB_NAME, resolve_database  # noqa: E402
from kd_plugin.tracking.locations import ENV_MONGO_DB as ENV_DB  # noqa: E402
from kd_plugin.tracking.locations import ENV_MONGO_URL as ENV_URL  # noqa: E402
from kd_plugin.tracking.run_tags import check_tag_value, format_tags  # noqa: E402

DISTILL = EXPERIMENTS / "distill.py"
FINETUNE = EXPERIMENTS / "finetune.py"
# Set per run by the sweep or by distill.py itself; never inherited from the sweep's environment.
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_RUN_ID = re.compile(r'Started run with ID "(\d+)"')
_FINETUNE_OWNED = ("distill_run_id", "model", "seed")


@dataclass
class Job:
    variant: str
    seed: int
    cmd: list[str]
    log: Path
    returncode: int | None = None
    seconds: float = 0.0
    run_id: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    finetune_cmd: list[str] | None = None  # without distill_run_id=..., added once the run id is known
    finetune_returncode: int | None = None
    finetune_run_id: int | None = None
    output_dir: Path | None = None  # with --output-root
    skipped: str | None = None  # --resume: why this run is not run again (it finished in an earlier sweep)


# ---------------------------------------------------------------------------------------------- arguments


def _one_value_per_flag(argv: list[str]) -> list[str]:
    """``--seeds 1 2 --variants full no_ce max_steps=5`` -> ``--seeds 1 --seeds 2 --variants full ...``: a list
    option takes only values of its kind, so `with` updates can follow it without a separator."""
    accepts = {"--seeds": lambda t: re.fullmatch(r"-?\d+", t) is not None, "--variants": lambda t: t in ALL_VARIANT_NAMES}
    out, i = [], 0
    while i < len(argv):
        flag = argv[i]
        i += 1
        if flag not in accepts:
            out.append(flag)
            continue
        values = []
        while i < len(argv) and accepts[flag](argv[i]):
            values.append(argv[i])
            i += 1
        out.extend([flag, values[0]] if values else [flag])  # no value: let argparse report it
        for value in values[1:]:
            out.extend([flag, value])
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    sacred_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, sacred_args = argv[:cut], argv[cut + 1 :]
    argv = _one_value_per_flag(argv)
    parser = argparse.ArgumentParser(
        prog="python experiments/sweep.py",
        description="Run the DistilBERT ablation variants over several seeds (experiments/distill.py).",
        epilog="Anything after `--` is passed to distill.py as Sacred options (before `with`).",
    )
    parser.add_argument("updates", nargs="*", help="distill.py `with` updates for every run: named configs "
                        "(smoke, paper, ...) and key=value (max_steps=200, data.max_documents=1000)")
    parser.add_argument("--seeds", type=int, action="append", required=True, metavar="SEED",
                        help="seeds, e.g. --seeds 1 2 3")
    parser.add_argument("--objective", choices=list(VARIANT_SETS), default="masked_lm",
                        help="masked_lm (default: the paper's Table 4) or causal_lm (DistilGPT2's variants, L_clm in "
                        f"place of L_mlm; every run starts from the `{CAUSAL_NAMED_CONFIG}` named config)")
    parser.add_argument("--variants", action="append", choices=ALL_VARIANT_NAMES, metavar="VARIANT",
                        help="default: all of the objective's ("
                        + "; ".join(f"{o}: {' '.join(v)}" for o, v in VARIANT_SETS.items()) + ")")
    parser.add_argument("--parallel", type=int, default=1, metavar="N", help="runs at a time (default 1; each run uses every core, so more helps only with spare cores)")
    parser.add_argument("--name", default=None, help="sweep id for the runs' tag (default: the start time)")
    parser.add_argument("--mongo-url", default=None, help=f"default ${ENV_URL}; none: distill.py's default")
    parser.add_argument("--db", default=None, help=f"database name (default ${ENV_DB}, else {DEFAULT_DB_NAME})")
    parser.add_argument("--output-root", type=Path, default=None, help="each run's output_dir becomes "
                        "<root>/<variant>-seed<seed>, logs go to <root>/logs (default: distill.py's own output_dir)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="default <output root>/logs, else outputs/sweeps/<sweep id>")
    parser.add_argument("--finetune", action="store_true",
                        help="after each successful run, fine-tune its student downstream (experiments/finetune.py "
                        "with distill_run_id=<run id> seed=<seed>), linked to the run")
    parser.add_argument("--finetune-update", action="append", default=[], metavar="KEY=VALUE",
                        help="a finetune.py `with` update for every fine-tuning (repeatable), e.g. threads=1")
    parser.add_argument("--script", type=Path, default=DISTILL, help=argparse.SUPPRESS)  # tests: a stand-in
    parser.add_argument("--finetune-script", type=Path, default=FINETUNE, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help="continue an earlier sweep in --output-root: "
                        "skip its finished runs, resume its interrupted ones from their last checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    args.sacred_args = sacred_args
    variants = VARIANT_SETS[args.objective]
    args.variants = args.variants or list(variants)
    if any(v not in variants for v in args.variants):
        parser.error(f"--variants of --objective {args.objective}: {' '.join(variants)}")
    if len(set(args.variants)) != len(args.variants):
        parser.error("--variants has duplicates")
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds has duplicates")
    if args.resume and args.output_root is None:
        parser.error("--resume continues the runs of an earlier sweep's --output-root: pass that --output-root")
    args.name = args.name or time.strftime("%Y%m%d-%H%M%S")
    try:
        check_tag_value(args.name)
        check_updates(args.updates)
        check_sacred_args(args.sacred_args, args.finetune)
        check_finetune_updates(args.finetune_update)
    except ValueError as err:
        parser.error(str(err))
    return args


def check_updates(updates: list[str]) -> None:
    """Refuse updates that would override what the variants vary (or the seed) for every run."""
    for update in updates:
        key, sep, value = update.partition("=")
        key = key.strip()
        if not sep:
            continue  # a named config
        if key in ("seed", *WEIGHT_KEYS):
            raise ValueError(f"{update!r}: {key} is set by the sweep (--seeds / --variants)")
        if key in ("output_dir", "resume"):
            raise ValueError(f"{update!r}: one {key} for every run would mix them up; use --output-root")
        if key == "student":
            raise ValueError(f"{update!r}: set single keys (student.n_layers=...), not the whole student block")
        if key == "student.layers" and value.strip().strip("'\"") == RANDOM_INIT:
            raise ValueError(f"{update!r}: random initialisation is the variant `--variants random_init`")


def check_finetune_updates(updates: list[str]) -> None:
    for update in updates:
        key = update.partition("=")[0].strip()
        if key in _FINETUNE_OWNED:
            raise ValueError(f"--finetune-update {update!r}: {key} is set by the sweep for each run")


FILE_ONLY_OPTIONS = ("-F", "--file_storage", "-u", "--unobserved")


def check_sacred_args(sacred_args: list[str], finetune: bool = False) -> None:
    for arg in sacred_args:
        if finetune and (arg in FILE_ONLY_OPTIONS or arg.startswith(("--file_storage=", "-F="))):
            raise ValueError(f"{arg} with --finetune: the fine-tune finds its distillation run by database id, "
                             "and a file-only or unobserved run has none")
        if arg in ("-c", "--comment") or arg.startswith("--comment="):
            raise ValueError("the sweep sets the run comment (its tags); do not pass -c/--comment")
        if arg in ("-m", "--mongo_db") or arg.startswith("--mongo_db="):
            raise ValueError("pass the database with --mongo-url/--db (Sacred's -m would bypass the project's "
                             "resilient observer)")


# ------------------------------------------------------------------------------------------------ database


def database_env(args: argparse.Namespace) -> tuple[dict[str, str], str]:
    """(the runs' database variables, a description safe to print).

    The rule's first two steps, taken here (:func:`kd_plugin.tracking.locations.resolve_database`, which never
    starts a server from the sweep): the URL and name given to the sweep or found in its environment reach each
    run as ``KD_MONGO_URL``/``KD_MONGO_DB``, the project's own route (:mod:`kd_plugin.tracking.observers`: the
    resilient observer, bounded output, thinned metrics, survives the database going away). Without a URL each
    run decides the rest itself (its config, else the embedded server; ``--db`` still names the database)."""
    destination = resolve_database(args.mongo_url, args.db, embedded="never", explicit="--mongo-url")
    db = args.db or os.environ.get(ENV_DB)  # only a name that was given: else each run's own config may name it
    url = destination.url if destination is not None else None
    env = {key: value for key, value in ((ENV_URL, url), (ENV_DB, db)) if value}
    where = redact_url(url) if url else "the embedded server (distill.py's default)"
    return env, f"{where}, database {db or DEFAULT_DB_NAME}"


# -------------------------------------------------------------------------------------------------- runs


def variant_updates(variant: str, user_updates: list[str], objective: str = "masked_lm") -> list[str]:
    """The objective's named config (causal LMs), the user's updates, then the variant's (the variant wins where
    both set a key)."""
    own = {key: value for key, value in VARIANT_SETS[objective][variant].updates.items()}
    kept = [u for u in user_updates if u.partition("=")[0].strip() not in own]
    named = [CAUSAL_NAMED_CONFIG] if objective == "causal_lm" and CAUSAL_NAMED_CONFIG not in kept else []
    return named + kept + [f"{key}={_sacred_value(value)}" for key, value in own.items()]


def _sacred_value(value: object) -> str:
    """A value as Sacred's `with` parser reads it back (identifiers stay bare words: random_init)."""
    if isinstance(value, str) and not value.isidentifier():
        return repr(value)
    return str(value)


def build_jobs(args: argparse.Namespace, log_dir: Path) -> list[Job]:
    jobs = []
    for seed in args.seeds:  # seed-major: an interrupted sweep still has whole seeds of every variant
        for variant in args.variants:
            comment = format_tags(sweep=args.name, variant=variant)
            updates = [*variant_updates(variant, args.updates, args.objective), f"seed={seed}"]
            output_dir = None
            if args.output_root is not None:
                output_dir = args.output_root.resolve() / f"{variant}-seed{seed}"
                updates.append(f"output_dir={_sacred_value(str(output_dir))}")
            cmd = [sys.executable, str(args.script), *args.sacred_args, "-c", comment, "with", *updates]
            finetune = None
            if args.finetune:
                # its output goes to a log file: plain progress lines, unless the user asks for the bar
                plain = [] if any(u.partition("=")[0].strip() == "progress_bar" for u in args.finetune_update) \
                    else ["progress_bar=False"]
                finetune = [sys.executable, str(args.finetune_script), "-c", comment, "with",
                            *plain, *args.finetune_update, f"seed={seed}"]
            jobs.append(Job(variant, seed, cmd, log_dir / f"{variant}-seed{seed}.log", finetune_cmd=finetune,
                            output_dir=output_dir))
    return jobs


def check_output_folders(jobs: list[Job], output_root: Path | None, resume: bool) -> None:
    """Refuse run folders that hold an earlier sweep's results (ConfigError on --output-root), or with
    ``resume`` mark the finished runs skipped and let the interrupted ones resume from their checkpoints."""
    used = [job for job in jobs if job.output_dir is not None and earlier_results(job.output_dir)]
    if not used:
        return
    names = ", ".join(job.output_dir.name for job in used)
    if not resume:
        raise ConfigError("--output-root", f"{output_root} already holds runs of an earlier sweep ({names}): "
                          "running them again would overwrite their students and mix their metrics and checkpoints",
                          "a new --output-root, or --resume to continue that sweep (finished runs skipped, "
                          "interrupted ones resumed from their last checkpoint)")
    stuck = []
    for job in used:
        card = read_model_card(job.output_dir / STUDENT)
        if card is not None and card.steps is not None and card.total_steps and card.steps >= card.total_steps:
            job.skipped, job.run_id, job.returncode = f"finished earlier (run {card.run_id})", card.run_id, 0
            if card.downstream or card.run_id is None:  # fine-tuned earlier (or no run id to link to)
                job.finetune_cmd = None
        elif latest_checkpoint(job.output_dir) is not None:
            job.cmd.append(f"resume={_sacred_value(str(job.output_dir))}")
        else:
            stuck.append(job.output_dir.name)
    if stuck:
        raise ConfigError("--output-root", f"{', '.join(stuck)} in {output_root} hold an earlier run's results but "
                          "no checkpoint to resume", "move those folders away, or a new --output-root")


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in cmd)


_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(message, flush=True)


def _run_logged(cmd: list[str], log_path: Path, env: dict[str, str], job: Job, stopping: threading.Event
                ) -> tuple[int, int | None]:
    """Run one command with its output in ``log_path``; (exit status, the Sacred run id it printed)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # an earlier sweep's log of this run stays above
        start = log.tell()
        # Own session: a Ctrl-C in the terminal reaches only the sweep, which forwards exactly one SIGINT.
        job.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=str(PROJECT_ROOT), start_new_session=True)
        if stopping.is_set():  # interrupted while this run was being started
            job.proc.send_signal(signal.SIGINT)
        returncode = job.proc.wait()
    with open(log_path, "rb") as log:
        log.seek(start)
        text = log.read().decode(errors="replace")
    found = _RUN_ID.search(text)
    if returncode != 0:
        tail = "\n".join("    " + line for line in text.splitlines()[-15:])
        say(f"[sweep] last lines of {log_path}:\n{tail}")
    return returncode, int(found.group(1)) if found else None


def run_job(job: Job, env: dict[str, str], stopping: threading.Event) -> Job:
    if stopping.is_set():
        return job
    t0 = time.monotonic()
    if job.skipped is not None:
        say(f"[sweep] skip {job.variant} seed={job.seed}: {job.skipped}")
    else:
        say(f"[sweep] start {job.variant} seed={job.seed} -> {job.log}")
        job.returncode, job.run_id = _run_logged(job.cmd, job.log, env, job, stopping)
        status = "ok" if job.returncode == 0 else f"FAILED (exit {job.returncode})"
        say(f"[sweep] {status}: {job.variant} seed={job.seed} run_id={job.run_id} in {time.monotonic() - t0:.0f} s")
    if job.finetune_cmd is not None and job.returncode == 0 and job.run_id is not None and not stopping.is_set():
        cmd = [*job.finetune_cmd, f"distill_run_id={job.run_id}"]
        log = job.log.with_name(job.log.stem + "-finetune.log")
        say(f"[sweep] fine-tune {job.variant} seed={job.seed}: {shell_line(cmd)} -> {log}")
        job.finetune_returncode, job.finetune_run_id = _run_logged(cmd, log, env, job, stopping)
        status = "ok" if job.finetune_returncode == 0 else f"FAILED (exit {job.finetune_returncode})"
        say(f"[sweep] fine-tune {status}: {job.variant} seed={job.seed} run_id={job.finetune_run_id}")
    job.seconds = time.monotonic() - t0
    return job


def summary(jobs: list[Job], sweep: str) -> str:
    def status_of(code: int | None) -> str:
        return "not run" if code is None else ("ok" if code == 0 else f"exit {code}")

    finetuned = any(job.finetune_cmd is not None for job in jobs)
    head = f"[sweep] {sweep}: {'variant':<12} {'seed':>5} {'status':<10} {'run_id':>7} {'seconds':>8}"
    lines = [head + (f" {'finetune':<10} {'ft_run':>7}" if finetuned else "")]
    for job in jobs:
        status = "skipped" if job.skipped is not None else status_of(job.returncode)
        line = (f"[sweep] {'':{len(sweep)}}  {job.variant:<12} {job.seed:>5} {status:<10} "
                f"{job.run_id if job.run_id is not None else '-':>7} {job.seconds:>8.0f}")
        if finetuned:
            ft_id = job.finetune_run_id if job.finetune_run_id is not None else "-"
            line += f" {status_of(job.finetune_returncode):<10} {ft_id:>7}"
        lines.append(line)
    return "\n".join(lines)


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        db_env, where = database_env(args)
    except ConfigError as err:  # e.g. a --mongo-url pymongo cannot parse: one line, password masked
        print(f"configuration error: {err}", file=sys.stderr)
        return 2
    default_logs = args.output_root / "logs" if args.output_root else OUTPUTS / "sweeps" / args.name
    log_dir = (args.log_dir or default_logs).resolve()
    jobs = build_jobs(args, log_dir)
    try:
        check_output_folders(jobs, args.output_root, args.resume)  # before anything starts, dry run or not
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2

    say(f"[sweep] {args.name}: {len(args.variants)} variant(s) x {len(args.seeds)} seed(s) = {len(jobs)} runs, "
        f"{args.parallel} at a time; database: {where}; logs: {log_dir}")
    shown_env = [f"{key}={shlex.quote(redact_url(value))}" for key, value in db_env.items()]
    for job in jobs:
        if job.skipped is not None:
            say(f"[sweep] {job.variant} seed={job.seed}: skipped, {job.skipped}")
        else:
            say(f"[sweep] {job.variant} seed={job.seed}: {' '.join([*shown_env, shell_line(job.cmd)])}")
    if args.dry_run:
        say("[sweep] dry run: nothing started")
        return 0

    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env.update(db_env)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGHUP):  # `kill <sweep>`, a closed terminal: stop the runs like Ctrl-C
        signal.signal(signum, _terminate_as_interrupt)
    pool = ThreadPoolExecutor(max_workers=args.parallel)
    try:
        futures = [pool.submit(run_job, job, env, stopping) for job in jobs]
        for future in futures:
            while not future.done():  # wait in small slices so Ctrl-C reaches this thread
                time.sleep(0.2)
    except KeyboardInterrupt:
        stopping.set()
        say("[sweep] interrupted: stopping the running runs")
        for job in jobs:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)  # Sacred marks the run INTERRUPTED
        for job in jobs:
            if job.proc is not None:
                try:
                    job.proc.wait(30)
                except subprocess.TimeoutExpired:
                    job.proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        say(summary(jobs, args.name))
        return 130
    pool.shutdown(wait=True)

    say(summary(jobs, args.name))
    failed = [job for job in jobs if job.returncode != 0]
    failed_finetunes = [job for job in jobs if job.finetune_cmd is not None and job.finetune_returncode != 0]
    if failed or failed_finetunes:
        say(f"[sweep] {len(failed)} of {len(jobs)} runs failed"
            + (f", {len(failed_finetunes)} fine-tunings failed or did not run" if failed_finetunes else ""))
        return 1
    settings = [f"KD_SWEEP={args.name}", *shown_env]
    say(f"[sweep] all {len(jobs)} runs completed. The table: `{' '.join(settings)} jupyter execute "
        f"analysis/ablation.ipynb` (writes outputs/analysis/{args.name}/), or open the notebook with those set; "
        f"as markdown, with the record of every run behind it to commit beside it: `{' '.join([*shown_env, 'python'])} "
        f"-m analysis.ablation_report --sweep {args.name} --export-out {log_dir / 'runs.json'}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
