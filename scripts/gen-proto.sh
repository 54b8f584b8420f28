#!/usr/bin/env bash
# Generates the Python stubs (server/djinn/v1/) and the TypeScript client code
# (client/generated/) from proto/djinn/v1/djinn.proto. Run by scripts/setup.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${DJINN_SETUP_PYTHON:-$root/.venv/bin/python}"
cd "$root"
mkdir -p server/djinn/v1
"$py" -m grpc_tools.protoc -Iproto --python_out=server --pyi_out=server --grpc_python_out=server proto/djinn/v1/djinn.proto
touch server/djinn/v1/__init__.py
if [ -x node_modules/.bin/protoc-gen-ts_proto ]; then
  mkdir -p client/generated
  "$py" -m grpc_tools.protoc -Iproto \
    --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
    --ts_proto_out=client/generated \
    --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,env=node,forceLong=number,useOptionals=messages,oneof=unions \
    proto/djinn/v1/djinn.proto
fi
