#!/usr/bin/env bash
# Regenerate the mall's gRPC stubs; the generated files are committed.
# Compiled from the repository root so they register as "mall/proto/<name>.proto" (no clash
# with other bare .proto names in protobuf's global registry) and import each other as
# `from mall.proto import user_pb2`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
    mall/proto/user.proto mall/proto/user_score.proto
# Generated code follows protoc's style, not ours: tell ruff and mypy to skip it.
for f in mall/proto/*_pb2*.py*; do
    { printf '# ruff: noqa\n# mypy: ignore-errors\n'; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
