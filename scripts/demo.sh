#!/usr/bin/env bash
# The demo: a stateful pipeline on the heap backend that checkpoints and rescales 2 -> 3 -> 1
# and checks every count against a single-threaded reference.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWSTATE_SKIP_S3=1 bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/flowstate-target}"
cargo run --release -p flowstate-cli -- demo "$@"
