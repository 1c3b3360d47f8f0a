#!/usr/bin/env bash
# Runs all of Weir's checks and tests: formatting, lints, build, unit and integration tests.
# Whatever a test needs beyond the Rust toolchain, this script installs and starts itself, on
# loopback only, and stops afterwards.
#
#   ./scripts/test.sh
#
# Builds go to $CARGO_TARGET_DIR (default ~/.cache/weir/target), shared by every clone on the
# machine so the C/C++ dependencies compile once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The S3 tests start this moto server (installed by setup.sh) on a free loopback port.
export WEIR_MOTO_SERVER="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/venv/bin/moto_server"
# The deployment checks run on the same venv's python (helm-python-sdk, kubernetes-validate).
venv_python="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/venv/bin/python"
# The Kafka tests start a broker (KRaft, on Java 17+) from these jars (installed by setup.sh from
# scripts/kafka/pom.xml) on free loopback ports.
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)"
export WEIR_KAFKA_LIBS="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/kafka-$kafka_version/libs"

step() { printf '\n== %s\n' "$*"; }

step "build prerequisites"
./scripts/setup.sh
step "format"
cargo fmt --all --check
step "deployment: chart lint, render and schema checks, manifests, image"
"$venv_python" scripts/deploy_check.py
step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build (binaries and example plugins the integration tests run)"
cargo build --workspace --locked
step "benchmarks compile"
cargo bench --workspace --no-run --locked
step "tests"
cargo test --workspace --locked
# Fault injection: the binaries again, with fault points (weir_runtime::faults), and the tests
# that drive them (storage errors and latency, dropped and duplicated reports, crashes between a
# checkpoint and its commit, Kafka to Kafka exactly once through crashes around the commit).
step "fault injection"
cargo clippy --workspace --all-targets --locked --features weir-tests/failpoints -- -D warnings
cargo build --workspace --locked --features weir-tests/failpoints
cargo test -p weir-tests --locked --features failpoints --test faults --test kafka_exactly_once
