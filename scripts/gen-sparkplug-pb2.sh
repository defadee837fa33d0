#!/usr/bin/env bash
# Regenerate sensord/ingest/formats/_sparkplug_b_pb2.py(i) from sparkplug_b.proto.
#
# protoc comes from grpcio-tools 1.64.1 (libprotoc 26.1, gencode "Protobuf Python Version
# 5.26.1"), installed into a throw-away venv under /tmp: grpcio-tools is NOT a dependency of
# sensord. That protoc is kept on purpose: gencode may not be newer than the runtime, and
# 5.26.1 gencode runs on every protobuf runtime that pyproject.toml allows (>=5.26).
# Run from the repository root: bash scripts/gen-sparkplug-pb2.sh
set -euo pipefail
here=sensord/ingest/formats
tmp=$(mktemp -d /tmp/sparkplug-gen.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q grpcio-tools==1.64.1
mkdir -p "$tmp/out"
"$tmp/venv/bin/python" -m grpc_tools.protoc --proto_path="$here" \
    --python_out="$tmp/out" --pyi_out="$tmp/out" sparkplug_b.proto
# `_` prefix: a helper module, not a registered format (formats/__init__.py); generated code
# is not ours to lint or type-check (the header lines below), the .pyi gives mypy the types
header='# ruff: noqa\n# mypy: ignore-errors\n# Generated from sparkplug_b.proto by scripts/gen-sparkplug-pb2.sh; do not edit.\n'
for ext in py pyi; do
    { printf "$header"; cat "$tmp/out/sparkplug_b_pb2.$ext"; } > "$here/_sparkplug_b_pb2.$ext"
done
"${RUFF:-.venv/bin/ruff}" format "$here/_sparkplug_b_pb2.py" "$here/_sparkplug_b_pb2.pyi"
