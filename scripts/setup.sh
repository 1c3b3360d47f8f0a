#!/usr/bin/env bash
# Installs what building and testing Weir needs beyond the Rust toolchain, if it is missing:
# - libclang (bindgen generates RocksDB's bindings with it; RocksDB itself is compiled from source);
# - moto's S3-compatible server (`moto[server]` from PyPI, in a Python venv under
#   ${WEIR_TOOLS_DIR:-~/.cache/weir/tools}/venv), which the S3 tests start on loopback;
# - the deployment checks' tools (scripts/deploy_check.py), pinned, in the same venv: Helm's engine
#   as a library (helm-python-sdk) and the Kubernetes OpenAPI schemas (kubernetes-validate);
# - the dashboard test's browser: Debian's chromium and chromium-driver, and Selenium (pinned, in the
#   same venv) that drives them (scripts/dashboard_check.py);
# - Schemathesis (pinned, in the same venv), which checks the REST API's OpenAPI document against a
#   live cluster (scripts/openapi_check.py);
# - Apache Kafka's broker: the jars of scripts/kafka/pom.xml (`org.apache.kafka:kafka_2.13` and its
#   runtime dependencies, from Maven Central) in ${WEIR_TOOLS_DIR:-~/.cache/weir/tools}/kafka-<version>/libs,
#   run on Java 17 or newer by the Kafka tests (tests/src/kafka.rs) in KRaft mode on loopback.
# Idempotent and quick when everything is present; needs root, the Debian package mirror, PyPI and
# Maven Central, as on the project's machines.
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

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -c 'import venv, ensurepip' > /dev/null 2>&1; then
    echo "setup: installing python3-venv (needed for the test tools' venv)"
    apt_install python3-venv
  fi
  mkdir -p "$tools_dir"
  python3 -m venv "$venv"
fi

if [ ! -x "$venv/bin/moto_server" ]; then
  echo "setup: installing moto[server] into the venv $venv (S3-compatible server for the S3 tests)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
fi

# Installs the pinned packages ("name==version" after the purpose) into the venv unless every one
# is installed at that version.
pip_pinned() {
  local purpose="$1"
  shift
  if ! "$venv/bin/python" -c '
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in (pin.split("==") for pin in sys.argv[1:])))
' "$@" > /dev/null 2>&1; then
    echo "setup: installing $* into the venv $venv ($purpose)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  fi
}

# The deployment checks (scripts/deploy_check.py): Helm v4's engine as a library (lint, render,
# values.schema.json; offline, no helm binary), the Kubernetes schemas (bundled), PyYAML; and the
# Prometheus project's text-format parser for the metrics tests (scripts/parse_metrics.py).
# Pinned; installed again only when an installed version differs.
pip_pinned "chart, manifest and metrics checks" \
  helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.4 prometheus-client==0.23.1

# The dashboard test (tests/tests/dashboard.rs): headless Chromium and its WebDriver from Debian
# (the driver matches the browser's version), driven by Selenium, which is given both paths and
# so never downloads a browser or driver of its own.
if ! command -v chromium > /dev/null || ! command -v chromedriver > /dev/null; then
  echo "setup: installing chromium and chromium-driver (the headless browser of the dashboard test)"
  apt_install chromium chromium-driver
fi
pip_pinned "the dashboard test's browser driver" selenium==4.51.0

# The REST API's OpenAPI document is checked against a live cluster by Schemathesis
# (scripts/openapi_check.py, tests/tests/openapi.rs).
pip_pinned "the OpenAPI check" schemathesis==4.32.5

# Kafka: reinstalled when scripts/kafka/pom.xml changes (its hash is kept beside the jars). The jars
# are copied into a fresh directory that replaces the old one only when complete.
kafka_pom="$(cd "$(dirname "$0")" && pwd)/kafka/pom.xml"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$kafka_pom")"
kafka_dir="$tools_dir/kafka-$kafka_version"
kafka_pom_hash="$(sha256sum "$kafka_pom" | cut -d' ' -f1)"
if [ "$(cat "$kafka_dir/pom.sha256" 2> /dev/null)" != "$kafka_pom_hash" ]; then
  if ! command -v java > /dev/null || ! command -v mvn > /dev/null; then
    echo "setup: installing Java and Maven (for the Kafka broker of the Kafka tests; Kafka 4 needs Java 17 or newer)"
    apt_install default-jre-headless maven
  fi
  echo "setup: installing Apache Kafka $kafka_version's broker jars from Maven Central into $kafka_dir/libs"
  mkdir -p "$tools_dir"
  rm -rf "$kafka_dir.tmp"
  mkdir -p "$kafka_dir.tmp"
  # Maven prints nothing useful on success (but stray colour codes); its log is shown on failure.
  if ! mvn -B -q -f "$kafka_pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$kafka_dir.tmp/libs" > "$kafka_dir.tmp/mvn.log" 2>&1; then
    cat "$kafka_dir.tmp/mvn.log" >&2
    echo "setup: installing Kafka's jars failed (Maven's log above)" >&2
    exit 1
  fi
  rm "$kafka_dir.tmp/mvn.log"
  echo "$kafka_pom_hash" > "$kafka_dir.tmp/pom.sha256"
  rm -rf "$kafka_dir"
  mv "$kafka_dir.tmp" "$kafka_dir"
fi
