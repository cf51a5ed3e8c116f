#!/usr/bin/env bash
# Regenerate the Python code for dtmx's .proto files; the generated files are committed.
#
#   python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
#       src/dtmx/api/proto/dtmgimp.proto
#   python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
#       tests/support/proto/busi.proto
#
# Why the include roots: protobuf keeps one global registry keyed by the .proto file name.
# aetcd registers bare names (rpc.proto, kv.proto, auth.proto), so ours are compiled from
# the package root and register as "dtmx/api/proto/dtmgimp.proto"; that also makes the
# generated stubs import each other as `from dtmx.api.proto import dtmgimp_pb2`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

"$PY" -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
    src/dtmx/api/proto/dtmgimp.proto
"$PY" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
    tests/support/proto/busi.proto
# Generated code follows protoc's style, not ours: tell ruff and mypy to skip it.
for f in src/dtmx/api/proto/dtmgimp_pb2*.py* tests/support/proto/busi_pb2*.py*; do
    { printf '# ruff: noqa\n# mypy: ignore-errors\n'; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
echo "generated: src/dtmx/api/proto/dtmgimp_pb2*.py* tests/support/proto/busi_pb2*.py*"
