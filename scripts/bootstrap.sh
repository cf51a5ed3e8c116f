#!/usr/bin/env bash
# Create .venv and install dtmx editable with its dev extras; idempotent.
#
# Skips the install when pyproject.toml, the repository path and the Python are the same as at
# the last successful install (a stamp file in .venv records them). FORCE=1 reinstalls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP=$VENV/.dtmx-bootstrap-stamp
PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

die() { printf 'bootstrap.sh: %s\n' "$*" >&2; exit 1; }

# Debian's python3 comes without venv/ensurepip; install the pieces when they are missing.
if [[ ! -x $VENV/bin/python ]] \
  && ! { command -v "$PYTHON" >/dev/null && "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; }; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "$PYTHON with venv and ensurepip is needed (Debian: apt-get install python3-venv)"
  fi
  out=$(mktemp)
  { apt-get -q update && apt-get -q -y install python3 python3-venv python3-dev gcc; } \
    >"$out" 2>&1 || { tail -n 30 "$out" >&2; die "installing python3-venv failed"; }
  rm -f "$out"
fi

if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || die "$VENV uses a Python older than 3.11: remove it and run again with PYTHON=python3.11"

want=$(
  {
    sha256sum pyproject.toml
    pwd
    "$VENV/bin/python" -VV
  } | sha256sum | cut -d' ' -f1
)
if [[ ${FORCE:-0} != 1 && -f $STAMP && $(<"$STAMP") == "$want" ]]; then
  echo "bootstrap:  ok  $VENV up to date"
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
if ! "$VENV/bin/python" -m pip install -q --upgrade pip >"$log" 2>&1 \
  || ! "$VENV/bin/python" -m pip install -q -e '.[dev]' >>"$log" 2>&1; then
  # -q keeps the log to warnings and errors; the tail holds the failure.
  tail -n 60 "$log" >&2
  die "pip install -e '.[dev]' failed"
fi
# pip exits 0 after some errors (a dependency conflict): show those, not its warnings.
grep '^ERROR' "$log" >&2 || true
printf '%s\n' "$want" >"$STAMP"
echo "bootstrap:  ok  $VENV installed in $((SECONDS - start)) s"
