# Sourced by .ci/run and scripts/test.sh (with CARGO_TARGET_DIR set): compiles RocksDB's C++
# once per target directory and points librocksdb-sys at the archive (ROCKSDB_LIB_DIR).
#
# Why: cargo builds a build script's dependencies as separate host units in check mode but
# shares them with the target units in build mode, so `cargo clippy` and `cargo test` never
# share librocksdb-sys's build script run, and each would compile RocksDB (~18 min on 2
# cores), whatever profile clippy uses. The archive is keyed by the librocksdb-sys version in
# Cargo.lock: a new version compiles anew. Set FLOWSTATE_ROCKSDB_FROM_SOURCE=1 to skip this.
if [ "${FLOWSTATE_ROCKSDB_FROM_SOURCE:-0}" != "1" ]; then
  rocksdb_version=$(awk '/^name = "librocksdb-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
  rocksdb_lib_dir="$CARGO_TARGET_DIR/prebuilt-rocksdb/$rocksdb_version"
  if [ -z "$rocksdb_version" ]; then
    echo "rocksdb-once: librocksdb-sys not found in Cargo.lock; RocksDB compiles as usual" >&2
  else
    if [ ! -f "$rocksdb_lib_dir/librocksdb.a" ]; then
      echo "rocksdb-once: compiling RocksDB $rocksdb_version once for lints and tests"
      # The backend's library selects librocksdb-sys with the workspace's features.
      env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC cargo build --profile test -p flowstate-rocksdb --lib
      archive=$(ls -t "$CARGO_TARGET_DIR"/debug/build/librocksdb-sys-*/out/librocksdb.a | head -n 1)
      mkdir -p "$rocksdb_lib_dir"
      cp "$archive" "$rocksdb_lib_dir/librocksdb.a.tmp"
      mv "$rocksdb_lib_dir/librocksdb.a.tmp" "$rocksdb_lib_dir/librocksdb.a"
    fi
    export ROCKSDB_LIB_DIR="$rocksdb_lib_dir" ROCKSDB_STATIC=1
  fi
fi
