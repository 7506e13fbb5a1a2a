#!/usr/bin/env bash
# GPU check of the project on an air-gapped CUDA machine: install the wheelhouse, check the imports, run a CUDA smoke
# distillation recorded in the embedded SecantusDB, run the BERT-base throughput benchmark (fp32 and bf16, the
# original-style loop beside the trainer), and print ONE summary (steps PASS/FAIL with wall times + the table).
#
# Run from the repository root, no network needed; the wheelhouse comes from scripts/wheelhouse.sh:
#   bash benchmarks/gpu_check.sh
# With the device tool: run(command="bash benchmarks/gpu_check.sh", carry=["wheelhouse"], timeout_s=540)
# Every step's time limit is capped by one deadline (KD_GPU_CHECK_TOTAL_S, default 510 s on CUDA) so the whole
# check, summary included, ends inside that timeout_s; the benchmark's results file is written after each stage.
#
# Environment (all optional):
#   WHEELHOUSE=wheelhouse          the folder scripts/wheelhouse.sh built (for this interpreter and platform)
#   PYTHON=python3                 the image's interpreter (the one that has torch)
#   OUT                            where the results JSON, the logs and the summary go (the device tool returns it)
#   KD_GPU_CHECK_ALLOW_CPU=1       run the same flow on a machine without CUDA, with CPU sizes (a dry run)
#   KD_GPU_CHECK_NO_TRAINER=1      benchmark the original-style loop alone
#   KD_GPU_CHECK_TOTAL_S           the deadline of the whole check in seconds (default 510 on CUDA, 3000 on CPU)
#   KD_GPU_CHECK_INJECT=fused_adam make the FusedAdam build fail (a dry run of the torch_adam fallback); also
#                                  late_crash (the benchmark dies after its first precision's results) and
#                                  probe_oom (the memory probe runs out of memory; on CPU the probe then runs too),
#                                  comma-separated: each must still leave a results file and a summary
#   KD_GPU_CHECK_DATASETS=5|3      force a datasets set; default: datasets-5 if the image's pyarrow >= 24, else
#                                  datasets-3 if pyarrow >= 15 (datasets 5.2 needs pyarrow >= 24, 3.6 runs on >= 15)
#   KD_GPU_CHECK_BENCH_ARGS        replace the benchmark's size arguments
#   KD_GPU_CHECK_WORK              work folder (targets, database, caches); default a fresh temporary one, removed
#                                  at the end unless KD_GPU_CHECK_KEEP=1
#
# Installs: the project's missing packages with `pip install --no-index --no-deps --target $WORK/site` (+ PYTHONPATH);
# wheels under if-needed/ only where the image's own copy is missing or fails the bound in if-needed/requirements.txt.
# SecantusDB (GPL) goes to its own target $WORK/secantus-site and runs through a wrapper (KD_SECANTUS_BIN) whose
# PYTHONPATH is that folder alone: the project only talks to it over its socket.
# Time: steps (a) smoke and (b) benchmark share a 6-minute budget on CUDA (the benchmark gets what the smoke left;
# at least 2 minutes; KD_GPU_CHECK_BUDGET_S changes it; a CPU dry run gets 30 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # FusedAdam's JIT build for Hopper only (~1 min)
export KD_TRACKING_FINAL_WAIT=${KD_TRACKING_FINAL_WAIT:-10}

PYTHON=${PYTHON:-python3}
PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"  # the image's ninja (DeepSpeed's JIT builds) sits beside it
export PATH
WHEELHOUSE=$(cd "${WHEELHOUSE:-wheelhouse}" 2>/dev/null && pwd || echo "${WHEELHOUSE:-wheelhouse}")
WORK=${KD_GPU_CHECK_WORK:-$(mktemp -d -t kd-gpu-check.XXXXXX)}
mkdir -p "$WORK"
RESULTS=${OUT:-${TMPDIR:-/tmp}/kd-gpu-check-$(date +%Y%m%d-%H%M%S)}  # kept after the run
mkdir -p "$RESULTS"
SITE=$WORK/site
SECANTUS_SITE=$WORK/secantus-site
export KD_DB_DIR=$WORK/db
export KD_RUNS_DIR=$WORK/runs
export KD_SECANTUS_BIN=$WORK/bin/secantusd-py
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$WORK/torch-extensions}

NAMES=() STATUS=() SECONDS_TAKEN=() DETAILS=()
STARTED=$(date +%s)
SUMMARY_RESERVE_S=15  # what the summary and cleanup need after the last step
record() { NAMES+=("$1"); STATUS+=("$2"); SECONDS_TAKEN+=("$3"); DETAILS+=("$4"); }

# run_step NAME TIMEOUT_S LOG FUNCTION: run an exported function in its own bash under a time limit, log to
# $RESULTS/LOG; a failure is recorded for the summary, never ends this script.
run_step() {
  local name=$1 limit=$2 log=$RESULTS/$3; shift 3
  local start rc=0 left
  left=$((STARTED + TOTAL_S - SUMMARY_RESERVE_S - $(date +%s)))
  if [ "$left" -lt 10 ]; then
    record "$name" FAIL 0 "not run: the check's deadline (${TOTAL_S}s) was reached"
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left  # every step ends inside the check's deadline
  start=$(date +%s.%N)
  echo "== $name (limit ${limit}s, log $log)"
  timeout --kill-after=10 "$limit" bash -c 'set -euo pipefail; "$@"' "$name" "$@" >"$log" 2>&1 || rc=$?
  local took
  took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  if [ "$rc" -eq 0 ]; then
    record "$name" PASS "$took" ""
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    record "$name" FAIL "$took" "timed out after ${limit}s"
  else
    record "$name" FAIL "$took" "exit $rc: $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-160)"
  fi
  tail -5 "$log" | sed 's/^/   | /'
  return 0
}

cleanup() {
  if [ -f "$KD_DB_DIR/kd_server.json" ]; then
    PYTHONPATH="$SITE:$REPO" "$PYTHON" -m kd_plugin.tracking.embedded_db stop >/dev/null 2>&1 || true
  fi
  if [ -z "${KD_GPU_CHECK_WORK:-}" ] && [ "${KD_GPU_CHECK_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --------------------------------------------------------------------------------------------- device
if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  MODE=cuda
elif [ "${KD_GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
  MODE=cpu
else
  MODE=none
fi
# steps (a) and (b) share this budget; a CPU dry run (JIT builds of DeepSpeed's CPU ops, slow cores) gets more
BUDGET_S=${KD_GPU_CHECK_BUDGET_S:-$([ "$MODE" = cpu ] && echo 1800 || echo 360)}
TOTAL_S=${KD_GPU_CHECK_TOTAL_S:-$([ "$MODE" = cuda ] && echo 510 || echo 3000)}
SMOKE_LIMIT_S=$([ "$MODE" = cpu ] && echo 1200 || echo 240)  # CPU: DeepSpeed's CPU ops JIT-build in minutes
export PYTHON WHEELHOUSE WORK RESULTS SITE SECANTUS_SITE MODE REPO
echo "gpu_check: mode $MODE, python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])'), wheelhouse $WHEELHOUSE, work $WORK"

# --------------------------------------------------------------------------------------------- install
pick_datasets() {
  if [ -n "${KD_GPU_CHECK_DATASETS:-}" ]; then echo "${KD_GPU_CHECK_DATASETS}"; return; fi
  "$PYTHON" - <<'PY'
import pyarrow
major = int(pyarrow.__version__.split(".")[0])
print(5 if major >= 24 else 3 if major >= 15 else 0)
PY
}

# wheels_if_needed FOLDER: the if-needed wheels whose bound the image's own copy does not meet.
wheels_if_needed() {
  local folder=$1/if-needed
  [ -f "$folder/requirements.txt" ] || return 0
  "$PYTHON" - "$folder" <<'PY'
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

folder = Path(sys.argv[1])
wheels = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in folder.glob("*.whl")}
for line in (folder / "requirements.txt").read_text().split():
    req = Requirement(line)
    try:
        have = md.version(req.name)
    except md.PackageNotFoundError:
        have = None
    if have is None or not req.specifier.contains(Version(have), prereleases=True):
        print(wheels[canonicalize_name(req.name)])
        print(f"if-needed: {req.name} {have or 'missing'} does not meet {req.specifier}: installing", file=sys.stderr)
PY
}

# shared_wheels FOLDER NAMES_FILE: the wheels of FOLDER whose (canonical) names NAMES_FILE lists.
shared_wheels() {
  [ -f "$2" ] || return 0
  "$PYTHON" - "$1" "$2" <<'PY'
import sys
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

wanted = set(Path(sys.argv[2]).read_text().split())
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    if canonicalize_name(parse_wheel_filename(wheel.name)[0]) in wanted:
        print(wheel)
PY
}

install() {
  set -euo pipefail
  [ -f "$WHEELHOUSE/MANIFEST.txt" ] || { echo "no wheelhouse at $WHEELHOUSE (build it with scripts/wheelhouse.sh)"; return 1; }
  local ds
  ds=$(pick_datasets)
  echo "image pyarrow: $("$PYTHON" -c 'import pyarrow; print(pyarrow.__version__)'); datasets set: datasets-$ds"
  [ "$ds" = 5 ] || [ "$ds" = 3 ] || { echo "pyarrow < 15: no datasets version of the wheelhouse runs on it"; return 1; }
  local wheels=("$WHEELHOUSE"/*.whl "$WHEELHOUSE/datasets-$ds"/*.whl) extra
  extra=$(wheels_if_needed "$WHEELHOUSE"; wheels_if_needed "$WHEELHOUSE/datasets-$ds")
  [ -z "$extra" ] || mapfile -t -O "${#wheels[@]}" wheels <<<"$extra"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}"
  echo "installed ${#wheels[@]} wheels into $SITE"

  local sec=("$WHEELHOUSE"/secantus/*.whl)
  mapfile -t -O "${#sec[@]}" sec < <(shared_wheels "$WHEELHOUSE" "$WHEELHOUSE/secantus/shared.txt")
  mapfile -t -O "${#sec[@]}" sec < <(wheels_if_needed "$WHEELHOUSE/secantus")
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SECANTUS_SITE" "${sec[@]}"
  echo "installed ${#sec[@]} wheels into $SECANTUS_SITE (SecantusDB, used over its socket only)"
  mkdir -p "$WORK/bin"
  cat >"$KD_SECANTUS_BIN" <<EOF
#!/bin/sh
# SecantusDB server, isolated: its own packages only (plus the interpreter's own site-packages)
PYTHONPATH="$SECANTUS_SITE" exec "$(command -v "$PYTHON")" -c 'import sys; from secantus.cli import main; sys.argv[0] = "secantusd-py"; sys.exit(main())' "\$@"
EOF
  chmod +x "$KD_SECANTUS_BIN"
}
export -f pick_datasets wheels_if_needed shared_wheels install
run_step "install wheelhouse" 180 install.log install
export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}

# --------------------------------------------------------------------------------------------- imports
imports() {
  set -euo pipefail
  "$PYTHON" - "$SITE" <<'PY'
import importlib.metadata as md
import sys

from packaging.requirements import Requirement
from packaging.version import Version

import datasets, deepspeed, pkg_resources, pydantic, pymongo, sacred, torch, transformers  # noqa: F401,E401
import kd_plugin.training.trainer  # noqa: F401  the project on this image's transformers
from deepspeed.accelerator import get_accelerator

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, available {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, deepspeed {deepspeed.__version__} ({get_accelerator().device_name()}), "
      f"sacred {sacred.__version__}, pymongo {pymongo.__version__}, datasets {datasets.__version__}, "
      f"pydantic {pydantic.__version__}")
if torch.cuda.is_available():
    print(f"GPU {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}")
unmet = []
for dist in md.distributions(path=[sys.argv[1]]):
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            unmet.append(f"{dist.metadata['Name']} needs {req}: missing")
            continue
        if req.specifier and not req.specifier.contains(Version(have), prereleases=True):
            unmet.append(f"{dist.metadata['Name']} needs {req}: found {have}")
print("requirements of the installed wheels: " + ("all met" if not unmet else "UNMET:\n  " + "\n  ".join(unmet)))
sys.exit(1 if any("missing" in u for u in unmet) else 0)
PY
  "$KD_SECANTUS_BIN" --help >/dev/null && echo "secantusd-py runs (isolated target)"
}
export -f imports
run_step "imports" 120 imports.log imports

# --------------------------------------------------------------------------------------------- optimizer kernel
# DeepSpeed's FusedAdam is JIT-built (nvcc, ninja, a matching compiler): if the image cannot build it, the smoke and
# the benchmark would both fail with no numbers at all. Build it once here (the later steps load it from
# TORCH_EXTENSIONS_DIR); on failure they run with torch's AdamW, and the summary says so.
fused_adam() {
  set -euo pipefail
  case ",${KD_GPU_CHECK_INJECT:-}," in *,fused_adam,*) echo "injected: the FusedAdam build fails"; return 1;; esac
  "$PYTHON" -c "from deepspeed.accelerator import get_accelerator as a; print('FusedAdam built:', a().create_op_builder('FusedAdamBuilder').load())"
}
export -f fused_adam
run_step "optimizer kernel (DeepSpeed FusedAdam JIT build)" 180 fused_adam.log fused_adam
TORCH_ADAM=0
if [ "${STATUS[${#STATUS[@]}-1]}" != PASS ]; then
  TORCH_ADAM=1
  echo "   | FusedAdam could not be built: the smoke and the benchmark use torch's AdamW (torch_adam)"
fi
SMOKE_DS_CONFIG=$REPO/ds_configs/zero2.json
if [ "$TORCH_ADAM" = 1 ]; then
  SMOKE_DS_CONFIG=$WORK/zero2-torch-adam.json
  "$PYTHON" -c "import json, sys; c = json.load(open(sys.argv[1])); c['optimizer']['params'] = {'torch_adam': True}; json.dump(c, open(sys.argv[2], 'w'))" \
    "$REPO/ds_configs/zero2.json" "$SMOKE_DS_CONFIG"
fi
export TORCH_ADAM SMOKE_DS_CONFIG

T0=$(date +%s)
# --------------------------------------------------------------------------------------------- (a) smoke
smoke() {
  set -euo pipefail
  if [ "$MODE" = none ]; then echo "no CUDA device (set KD_GPU_CHECK_ALLOW_CPU=1 for a CPU dry run)"; return 1; fi
  "$PYTHON" experiments/distill.py with smoke progress_bar=False output_dir="$WORK/smoke-run" \
    data.cache_dir="$WORK/cache/datasets" deepspeed_config="$SMOKE_DS_CONFIG"
  "$PYTHON" - <<'PY'
import os
import sys

import pymongo

from kd_plugin.tracking.embedded_db import get_running_server

server = get_running_server()
if server is None:
    sys.exit("the embedded SecantusDB server is not running: the run was not recorded there")
client = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000)
run = client[os.environ.get("KD_MONGO_DB", "kd_plugin")]["runs"].find_one(sort=[("_id", -1)])
if run is None:
    sys.exit(f"no run in the database at {server.url}")
engine = (run.get("info") or {}).get("engine", {})
result = run.get("result") or {}
print(f"DB run {run['_id']} ({run['experiment']['name']}) status {run['status']}: steps {result.get('steps')}, "
      f"final loss {result.get('final_loss')}, engine {engine.get('precision')}/{engine.get('optimizer')}/"
      f"ZeRO-{engine.get('zero_stage')}, host GPUs {(run.get('host') or {}).get('gpus')}")
sys.exit(0 if run["status"] == "COMPLETED" else 1)
PY
}
export -f smoke
run_step "(a) smoke distillation, recorded in SecantusDB" "$SMOKE_LIMIT_S" smoke.log smoke

# --------------------------------------------------------------------------------------------- (b) benchmark
bench() {
  set -euo pipefail
  if [ "$MODE" = none ]; then echo "no CUDA device (set KD_GPU_CHECK_ALLOW_CPU=1 for a CPU dry run)"; return 1; fi
  local args
  if [ -n "${KD_GPU_CHECK_BENCH_ARGS:-}" ]; then
    read -r -a args <<<"$KD_GPU_CHECK_BENCH_ARGS"
  elif [ "$MODE" = cuda ]; then
    # BERT-base teacher -> 6 layers, micro-batch 128, 8 windows x 5 steps per side; then the largest micro-batch of
    # 512-token sequences a bf16 step fits (the paper's 4K-sequence batch at length 512)
    # (bf16 also times the compiled trainer, performance.compile=true, in the same windows)
    args=(--precision both --memory-probe --trainer-variant bf16:performance.compile=true)
  else
    args=(--precision fp32 --windows 3 --steps-per-window 1 --warmup 1)  # bert-tiny -> 1 layer, micro-batch 16
  fi
  case ",${KD_GPU_CHECK_INJECT:-}," in *,probe_oom,*) [ "$MODE" = cuda ] || args+=(--memory-probe);; esac
  [ "${KD_GPU_CHECK_NO_TRAINER:-0}" = 1 ] && args+=(--no-trainer)
  [ "$TORCH_ADAM" = 1 ] && args+=(--torch-adam)
  KD_BENCH_INJECT=${KD_GPU_CHECK_INJECT:-} \
    "$PYTHON" benchmarks/distill_throughput.py "${args[@]}" --out "$RESULTS" --cache-dir "$WORK/cache"
}
LEFT=$((BUDGET_S - ($(date +%s) - T0)))
[ "$LEFT" -ge 120 ] || LEFT=120
export -f bench
run_step "(b) throughput benchmark ($MODE sizes)" "$LEFT" bench.log bench

# --------------------------------------------------------------------------------------------- (c) summary
{
  echo "# gpu_check summary ($(date -u +%FT%TZ), mode $MODE)"
  echo
  echo "| step | result | wall s | detail |"
  echo "| --- | --- | ---: | --- |"
  for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${STATUS[$i]} | ${SECONDS_TAKEN[$i]} | ${DETAILS[$i]} |"
  done
  echo
  [ "$TORCH_ADAM" = 1 ] && echo "FusedAdam could not be built on this image: the smoke and the trainer ran torch's AdamW"
  grep -h "^DB run" "$RESULTS/smoke.log" 2>/dev/null || true
  grep -h "requirements of the installed wheels" -A5 "$RESULTS/imports.log" 2>/dev/null | grep -v "^secantusd" || true
  echo
  grep -h -E "^(device|dense matmul peak):" "$RESULTS/bench.log" 2>/dev/null || true
  echo
  grep -h -E "^\|" "$RESULTS/bench.log" 2>/dev/null || echo "(no benchmark table)"
  grep -h -E "^- |^results:" "$RESULTS/bench.log" 2>/dev/null || true
  ls "$RESULTS"/*.json >/dev/null 2>&1 && echo "results files (written after each stage): $(ls "$RESULTS"/*.json | xargs -n1 basename | tr '\n' ' ')"
  echo
  grep -h -E "per-phase time|ms/step|memory probe:" "$RESULTS/bench.log" 2>/dev/null || true
} | tee "$RESULTS/gpu_check_summary.md"
for status in "${STATUS[@]}"; do [ "$status" = PASS ] || exit 1; done
