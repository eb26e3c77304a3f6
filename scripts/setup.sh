#!/usr/bin/env bash
# Installs what building and testing flowstate needs on a fresh Debian/Ubuntu machine:
# clang + libclang for RocksDB's bindgen, and moto (a local S3-compatible server) for the S3
# checkpoint-storage tests. Idempotent and non-interactive; skips what is already there.
set -euo pipefail

need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need_apt+=(libclang-dev)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${FLOWSTATE_SKIP_S3:-0}" != "1" ] && ! command -v moto_server >/dev/null 2>&1; then
  echo "setup: installing moto[server] (local S3 for tests)"
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]" \
    || echo "setup: moto could not be installed; S3 tests will be skipped"
fi
