#!/usr/bin/env bash
# Regenerates the Python protobuf/gRPC code of the client distribution from proto/.
# The proto path (ringfence/v1/...) matches the Python import path, so protoc writes
# correct imports by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=clients/python/src
python -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/ringfence/v1/*.proto
