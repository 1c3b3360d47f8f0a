#!/usr/bin/env bash
# Installs what building Weir needs beyond the Rust toolchain, if it is missing: libclang (bindgen
# generates RocksDB's bindings with it; RocksDB itself is compiled from source). Idempotent; needs
# root and the Debian package mirror, as on the project's machines.
set -euo pipefail
have_libclang() {
  ls /usr/lib/llvm-*/lib/libclang*.so* > /dev/null 2>&1 || ldconfig -p 2> /dev/null | grep -q 'libclang'
}
if ! have_libclang; then
  echo "setup: installing libclang-dev (needed to build RocksDB's bindings)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libclang-dev > /dev/null
fi
