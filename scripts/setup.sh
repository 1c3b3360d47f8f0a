#!/usr/bin/env bash
# Installs what building and testing Weir needs beyond the Rust toolchain, if it is missing:
# - libclang (bindgen generates RocksDB's bindings with it; RocksDB itself is compiled from source);
# - moto's S3-compatible server (`moto[server]` from PyPI, in a Python venv under
#   ${WEIR_TOOLS_DIR:-~/.cache/weir/tools}/venv), which the S3 tests start on loopback.
# Idempotent and quick when everything is present; needs root, the Debian package mirror and PyPI,
# as on the project's machines.
set -euo pipefail
tools_dir="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}"
venv="$tools_dir/venv"

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" > /dev/null
}

# The way clang-sys (used by bindgen) looks for it: LIBCLANG_PATH, else `libclang.so`,
# `libclang-<version>.so` or `libclang.so.<version>` in the LLVM and system library directories.
# `libclang-cpp.so.*` (the C++ interface, present on a fresh Debian) is not libclang.
have_libclang() {
  local dirs=(${LIBCLANG_PATH:-} /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib)
  local dir file
  for dir in "${dirs[@]}"; do
    for file in "$dir"/libclang.so "$dir"/libclang.so.* "$dir"/libclang-[0-9]*.so "$dir"/libclang-[0-9]*.so.*; do
      [ -e "$file" ] && return 0
    done
  done
  return 1
}
if ! have_libclang; then
  echo "setup: installing libclang-dev (needed to build RocksDB's bindings)"
  apt_install libclang-dev
fi

if [ ! -x "$venv/bin/moto_server" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -c 'import venv, ensurepip' > /dev/null 2>&1; then
      echo "setup: installing python3-venv (needed for the test tools' venv)"
      apt_install python3-venv
    fi
    mkdir -p "$tools_dir"
    python3 -m venv "$venv"
  fi
  echo "setup: installing moto[server] into the venv $venv (S3-compatible server for the S3 tests)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
fi
