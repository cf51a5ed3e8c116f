#!/usr/bin/env bash
# The one test command: services, virtualenv, lint, type check, every test.
#
#   bash scripts/test.sh                      # everything
#   bash scripts/test.sh tests/unit -k saga   # extra arguments go to pytest; paths among them
#                                             # replace the default test directories
#
# DTMX_TEST_SKIP_LINT=1 skips ruff and mypy; DTMX_TEST_TIMEOUT (seconds, default 1320) bounds
# the pytest run as a whole (each test is also bounded by pytest-timeout, see pyproject.toml).
# The bound keeps the whole command under 25 minutes: services, a fresh virtualenv and lint
# take about 3 of them. The suite ran in 10 minutes on the machine of 2026-11-30 and in
# about 18-20 on the slower one of 2026-12-01 (most tests wait on real processes, not CPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '== %s\n' "$*"; }
fail() { printf 'test.sh: FAILED: %s\n' "$*" >&2; exit 1; }

step services
bash scripts/services.sh || fail "scripts/services.sh"
step bootstrap
bash scripts/bootstrap.sh || fail "scripts/bootstrap.sh"

# Optional top-level trees that take part in lint and tests when present.
lint_paths=(src tests)
test_paths=(tests)
for d in mall bench chaos examples sim; do
  if [[ -d $d ]]; then lint_paths+=("$d"); fi
done
if [[ -d mall/tests ]]; then test_paths+=(mall/tests); fi

if [[ ${DTMX_TEST_SKIP_LINT:-0} != 1 ]]; then
  step "ruff check ${lint_paths[*]}"
  .venv/bin/ruff check -q --output-format concise "${lint_paths[@]}" || fail "ruff check"
  step mypy
  .venv/bin/mypy || fail "mypy"
fi

# Paths given on the command line (file, dir or file::test) replace the default ones.
for arg in "$@"; do
  if [[ $arg != -* && -e ${arg%%::*} ]]; then
    test_paths=()
    break
  fi
done

step "pytest $(printf '%s ' "${test_paths[@]}" "$@")"
rc=0
timeout --kill-after=30 "${DTMX_TEST_TIMEOUT:-1320}" \
  .venv/bin/pytest -q -p no:cacheprovider --durations=15 "${test_paths[@]}" "$@" </dev/null \
  || rc=$?
case $rc in
  0) ;;
  5) fail "pytest collected no tests" ;;
  124 | 137) fail "pytest ran past ${DTMX_TEST_TIMEOUT:-1320} s and was stopped" ;;
  *) fail "pytest exited with $rc" ;;
esac
# No closing line of our own on success: pytest's summary stays the last line of the output.
