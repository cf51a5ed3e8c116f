#!/usr/bin/env bash
# Regenerate the Python code for dtmx's .proto files; the generated files are committed.
#
# The generated code checks at import time that the installed grpcio and protobuf are at
# least the versions that generated it, so it is generated with the OLDEST grpcio-tools we
# support (GRPCIO_TOOLS below, the `grpc` extra's floor in pyproject.toml), in a venv of its
# own (.venv-protoc), never with whatever the dev venv has.
#
# Why the include roots: protobuf keeps one global registry keyed by the .proto file name.
# aetcd registers bare names (rpc.proto, kv.proto, auth.proto), so ours are compiled from
# the package root and register as "dtmx/proto/dtmgimp.proto"; that also makes the
# generated stubs import each other as `from dtmx.proto import dtmgimp_pb2`.
# dtmx.proto is shared by the SDK (dtmx.client.grpc) and the server (dtmx.api.grpc_api):
# one registration, so both can live in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
GRPCIO_TOOLS=1.66.2
VENV=.venv-protoc

if [[ ! -x $VENV/bin/python ]] \
  || ! "$VENV/bin/python" -m pip show grpcio-tools 2>/dev/null | grep -qx "Version: $GRPCIO_TOOLS"; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS"
fi
PY="$VENV/bin/python"

"$PY" -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
    src/dtmx/proto/dtmgimp.proto src/dtmx/proto/wf.proto
"$PY" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
    tests/support/proto/busi.proto
# Generated code follows protoc's style, not ours: tell ruff and mypy to skip it.
for f in src/dtmx/proto/dtmgimp_pb2*.py* src/dtmx/proto/wf_pb2*.py* tests/support/proto/busi_pb2*.py*; do
    { printf '# ruff: noqa\n# mypy: ignore-errors\n'; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
echo "generated with grpcio-tools $GRPCIO_TOOLS: src/dtmx/proto/dtmgimp_pb2*.py* src/dtmx/proto/wf_pb2*.py* tests/support/proto/busi_pb2*.py*"
