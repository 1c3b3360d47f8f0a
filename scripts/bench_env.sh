# Sourced by the benchmark scripts: builds the release binaries, creates a work directory and
# makes sure every process a script records in PIDS is stopped (and the directory removed) when
# it exits. Sets BIN (the release binaries), WORK and PIDS.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
./scripts/setup.sh
cargo build --release --workspace --quiet
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
