#!/usr/bin/env bash
# Run the test suite against a real MongoDB-wire server (SecantusDB, in-memory) over a socket.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the slow checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PATH="$PWD/.venv/bin:$PATH"  # one ninja for every DeepSpeed op build (kd_plugin/runtime/tools.py)
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch-extensions}"  # the ops setup built
PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
LOG=$(mktemp -t kd-test-secantus.XXXXXX.log)
.venv-secantus/bin/secantusd-py --host 127.0.0.1 --port "$PORT" --storage-path :memory: >"$LOG" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true; wait $SERVER_PID 2>/dev/null || true' EXIT
export KD_TEST_MONGO_URL="mongodb://127.0.0.1:$PORT"
.venv/bin/python - <<PY
import time, pymongo
deadline = time.time() + 30
while True:
    try:
        pymongo.MongoClient("$KD_TEST_MONGO_URL", serverSelectionTimeoutMS=500).admin.command("ping"); break
    except Exception:
        if time.time() > deadline: raise SystemExit("test MongoDB server did not start; see $LOG")
        time.sleep(0.2)
print("[test] SecantusDB test server at $KD_TEST_MONGO_URL")
PY
# One worker per core (at most 4; KD_TEST_WORKERS overrides, 1 = in this process): most tests wait on a
# subprocess that is one Python process importing torch and DeepSpeed, so files run side by side scale with the
# cores. --dist loadfile keeps a file's module-scoped fixtures (one distillation run, shared) in one worker.
CORES=$(nproc 2>/dev/null || echo 2)
WORKERS=${KD_TEST_WORKERS:-$(( CORES < 4 ? CORES : 4 ))}
if [ "$WORKERS" -gt 1 ]; then
    set -- -n "$WORKERS" --dist loadfile "$@"
fi
.venv/bin/python -m pytest "$@"
