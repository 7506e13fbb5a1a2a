"""experiments/sweep.py as users call it, with a stand-in for distill.py (seconds): the commands it builds,
what it refuses, how the database reaches the runs (KD_MONGO_URL / KD_MONGO_DB, the project's tracking route),
and its exit status when a run fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SWEEP = PROJECT / "experiments" / "sweep.py"

# Records its arguments and environment, then behaves like a Sacred run (fails for the no_ce variant).
STAND_IN = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    args = sys.argv[1:]
    seed = next(a for a in args if a.startswith("seed="))
    out = Path(os.environ["STAND_IN_DIR"])
    n = os.getpid()  # unique even when two stand-ins start at once (--parallel)
    keep = ("KD_MONGO_URL", "KD_MONGO_DB", "RANK", "MASTER_PORT")
    (out / f"call-{n}.json").write_text(json.dumps({"args": args, "env": {k: os.environ.get(k) for k in keep}}))
    print(f'INFO - distill - Started run with ID "{n}"')
    sys.exit(3 if "alpha_ce=0.0" in args else 0)
""")


def sweep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SWEEP), *args], capture_output=True, text=True, timeout=120,
                          cwd=PROJECT, env=env)


def commands(stdout: str) -> dict[str, str]:
    """`[sweep] <variant> seed=<n>: <command>` lines -> {"<variant> seed=<n>": command}."""
    return dict(re.findall(r"^\[sweep\] (\w+ seed=\d+): (.*)$", stdout, flags=re.M))


def summary_rows(stdout: str) -> list[tuple[str, str, str]]:
    """The final summary table: (variant, seed, status)."""
    return re.findall(r"^\[sweep\]\s+(\w+)\s+(\d+)\s+(ok|exit \d+|not run)\s", stdout, flags=re.M)


def test_dry_run_prints_one_tagged_command_per_variant_and_seed():
    proc = sweep("--seeds", "1", "2", "--variants", "full", "random_init", "smoke", "max_steps=3",
                 "student.layers=first", "--name", "t1", "--mongo-url", "mongodb://127.0.0.1:27999", "--db", "abl",
                 "--dry-run", "--", "-l", "WARNING")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert list(cmds) == ["full seed=1", "random_init seed=1", "full seed=2", "random_init seed=2"]
    full = cmds["full seed=2"]
    assert full.startswith("KD_MONGO_URL=mongodb://127.0.0.1:27999 KD_MONGO_DB=abl "
                           f"{sys.executable} {PROJECT / 'experiments' / 'distill.py'} -l WARNING ")
    assert "WARNING -c 'kd-sweep sweep=t1 variant=full' with smoke max_steps=3" in full
    assert full.endswith("student.layers=first alpha_ce=5.0 alpha_mlm=2.0 alpha_cos=1.0 seed=2")
    assert cmds["random_init seed=1"].endswith(
        "with smoke max_steps=3 alpha_ce=5.0 alpha_mlm=2.0 alpha_cos=1.0 student.layers=random_init seed=1")
    assert "dry run: nothing started" in proc.stdout


def test_the_causal_objective_runs_distilgpt2s_variants_from_the_causal_lm_named_config():
    proc = sweep("--objective", "causal_lm", "--seeds", "1", "causal_smoke", "max_steps=3", "--name", "c1",
                 "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert list(cmds) == [f"{v} seed=1" for v in ("full", "no_ce", "no_cos", "no_clm", "random_init")]
    assert cmds["full seed=1"].endswith("with causal_lm causal_smoke max_steps=3 alpha_ce=5.0 alpha_clm=2.0 "
                                        "alpha_cos=1.0 alpha_mlm=0.0 seed=1")
    assert "alpha_clm=0.0" in cmds["no_clm seed=1"] and "alpha_ce=5.0" in cmds["no_clm seed=1"]
    refused = sweep("--objective", "causal_lm", "--seeds", "1", "--variants", "no_mlm", "--dry-run")
    assert refused.returncode == 2 and "--variants of --objective causal_lm: full no_ce no_cos no_clm random_init" \
        in refused.stderr, refused.stderr


def test_refuses_updates_that_would_undo_the_ablation():
    for bad, says in ((["alpha_ce=1"], "alpha_ce is set by the sweep"), (["seed=3"], "seed is set by the sweep"),
                      (["student.layers=random_init"], "random initialisation is the variant"),
                      (["--", "-c", "mine"], "the sweep sets the run comment"),
                      (["--variants", "no_such"], "invalid choice: 'no_such'"),
                      (["--finetune", "--", "-F", "files"], "-F with --finetune")):
        proc = sweep("--seeds", "1", *bad, "--dry-run")
        assert proc.returncode == 2, (bad, proc.stdout)
        assert "error: " in proc.stderr and says in proc.stderr, (bad, proc.stderr)


def test_runs_every_job_and_exits_non_zero_when_one_fails(tmp_path):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    env = dict(os.environ, STAND_IN_DIR=str(tmp_path), KD_MONGO_URL="mongodb://127.0.0.1:27999",
               KD_MONGO_DB="from_env", RANK="3", MASTER_PORT="1234")
    proc = sweep("--seeds", "1", "2", "--variants", "full", "no_ce", "--script", str(script),
                 "--log-dir", str(tmp_path / "logs"), "--parallel", "2", env=env)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    calls = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("call-*.json"))]
    assert len(calls) == 4  # a failed run does not stop the others
    for call in calls:
        # the database reaches each run through the environment; a launcher's rank/port do not
        variant = "no_ce" if "alpha_ce=0.0" in call["args"] else "full"
        assert call["args"][0] == "-c" and call["args"][1].endswith(f" variant={variant}")
        assert call["env"] == {"KD_MONGO_URL": "mongodb://127.0.0.1:27999", "KD_MONGO_DB": "from_env",
                               "RANK": None, "MASTER_PORT": None}
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "full-seed1.log", "full-seed2.log", "no_ce-seed1.log", "no_ce-seed2.log"]
    assert "2 of 4 runs failed" in proc.stdout
    assert summary_rows(proc.stdout) == [("full", "1", "ok"), ("no_ce", "1", "exit 3"), ("full", "2", "ok"),
                                         ("no_ce", "2", "exit 3")]


def test_a_url_with_credentials_reaches_the_runs_and_is_never_printed(tmp_path):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    url = "mongodb://analyst:s3cret@127.0.0.1:27999/?authSource=admin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KD_MONGO")}
    env["STAND_IN_DIR"] = str(tmp_path)
    proc = sweep("--seeds", "1", "--variants", "full", "--script", str(script), "--mongo-url", url,
                 "--db", "abl", "--log-dir", str(tmp_path / "logs"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    assert "KD_MONGO_URL='mongodb://analyst:***@127.0.0.1:27999/?authSource=admin'" in proc.stdout
    (call,) = [json.loads(p.read_text()) for p in tmp_path.glob("call-*.json")]
    assert "s3cret" not in " ".join(call["args"])
    assert call["env"]["KD_MONGO_URL"] == url and call["env"]["KD_MONGO_DB"] == "abl"


def test_finetune_follows_each_successful_run_linked_by_its_run_id(tmp_path):
    script, finetune = tmp_path / "stand_in.py", tmp_path / "finetune_stand_in.py"
    script.write_text(STAND_IN)
    finetune.write_text(STAND_IN.replace('call-{n}', 'ft-{n}').replace('seed = next(a for a in args if a.startswith("seed="))', ''))
    env = dict(os.environ, STAND_IN_DIR=str(tmp_path), KD_MONGO_URL="mongodb://127.0.0.1:27999", KD_MONGO_DB="x")
    proc = sweep("--seeds", "1", "2", "--variants", "full", "no_ce", "--script", str(script), "--finetune",
                 "--finetune-script", str(finetune), "--finetune-update", "threads=1",
                 "--log-dir", str(tmp_path / "logs"), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the no_ce stand-in fails: nothing to fine-tune
    distilled = {}
    for p in tmp_path.glob("call-*.json"):
        call = json.loads(p.read_text())
        distilled[p.stem.split("-")[1]] = call["args"]
    finetuned = [json.loads(p.read_text())["args"] for p in tmp_path.glob("ft-*.json")]
    ok_runs = {pid for pid, args in distilled.items() if "alpha_ce=0.0" not in args}
    assert len(finetuned) == len(ok_runs) == 2
    for args in finetuned:
        run_id = next(a for a in args if a.startswith("distill_run_id=")).split("=")[1]
        assert run_id in ok_runs
        seed = next(a for a in distilled[run_id] if a.startswith("seed="))
        assert seed in args and "threads=1" in args
        assert "progress_bar=False" in args  # its output goes to a log file: plain lines, not a bar
        assert args[0] == "-c" and args[1].endswith(" variant=full")  # the run's own sweep tags
    assert "1 fine-tunings failed" not in proc.stdout and "2 fine-tunings failed or did not run" in proc.stdout


def test_finetune_updates_may_not_override_the_link():
    proc = sweep("--seeds", "1", "--finetune", "--finetune-update", "distill_run_id=3", "--dry-run")
    assert proc.returncode == 2 and "set by the sweep" in proc.stderr
