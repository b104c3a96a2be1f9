#!/usr/bin/env bash
# The whole test suite: unit and integration tests of every crate (real agents on 127.0.0.x),
# then the py-consul client's own test suite against our agent. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo build --workspace --all-targets
cargo test --workspace
scripts/conformance.sh
