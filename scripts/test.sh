#!/usr/bin/env bash
# The test command: installs what it needs, starts a local S3 server for the S3 tests, and
# runs every test of the workspace (unit, integration, conformance, doc tests, and the
# criterion benches in test mode, which share the test profile so RocksDB compiles once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/flowstate-target}"
export FLOWSTATE_PROPTEST_CASES="${FLOWSTATE_PROPTEST_CASES:-256}"
source scripts/rocksdb-once.sh

moto_pid=""
cleanup() { [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true; }
trap cleanup EXIT
if command -v moto_server >/dev/null 2>&1 && [ "${FLOWSTATE_SKIP_S3:-0}" != "1" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  moto_server -H 127.0.0.1 -p "$port" >/tmp/flowstate-moto.log 2>&1 &
  moto_pid=$!
  for _ in $(seq 1 50); do
    curl -s "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.2
  done
  export FLOWSTATE_S3_ENDPOINT="http://127.0.0.1:$port"
  python3 - <<PYEOF
import boto3
boto3.client("s3", endpoint_url="$FLOWSTATE_S3_ENDPOINT", region_name="us-east-1",
             aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="flowstate-test")
PYEOF
  echo "test: local S3 (moto) at $FLOWSTATE_S3_ENDPOINT"
fi

# The CLI's RocksDB feature (off in its default build) is on for the tests: the same build
# the RocksDB backend tests use, nothing compiled twice.
cargo test --workspace --all-targets --features flowstate-cli/rocksdb
cargo test --workspace --doc --features flowstate-cli/rocksdb
