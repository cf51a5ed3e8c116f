#!/usr/bin/env bash
# Prove the dependency floors: a fresh venv with the SDK, the SQLite server and gRPC at
# exactly the versions of tests/floors/floors.txt (the `>=` floors of pyproject.toml), then
# the unit tests and end-to-end sagas (HTTP, gRPC) against a real `dtmx serve` from it.
#
#   flock /tmp/dtmx-itest.lock bash scripts/test_floors.sh     # ~1-2 min with a warm pip cache
#
# Its own command (not part of scripts/test.sh): it builds a second venv. Test-only tools
# (pytest, fastapi, ...) are not floors and come at their newest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${FLOORS_VENV:-.venv-floors}
FLOORS=tests/floors/floors.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1

rm -rf "$VENV"
python3 -m venv "$VENV"
timeout 600 "$VENV/bin/python" -m pip install -q --constraint "$FLOORS" \
  '.[server,grpc]' pytest pytest-asyncio pytest-timeout requests fastapi httpx aiosqlite mypy hypothesis
# The constraint file must have been honoured: every floor is installed at that version.
"$VENV/bin/python" - "$FLOORS" <<'PY'
import sys
from importlib.metadata import version
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        if version(name) != want:
            bad.append(f"{name} {version(name)} != {want}")
assert not bad, bad
print("floors installed:", ", ".join(l.split("#")[0].strip() for l in open(sys.argv[1]) if l.split("#")[0].strip()))
PY
# The installed copy, not the source tree: run from a directory without src/ on the path.
timeout 600 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/unit tests/integration/sdk/test_sdk_saga.py tests/integration/sdk/test_sdk_grpc.py
