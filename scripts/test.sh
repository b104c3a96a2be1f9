#!/usr/bin/env bash
# The whole test suite: unit and integration tests of every crate (real agents on 127.0.0.x),
# then the py-consul client's own test suite against our agent, then a 150-second Jepsen-style
# run of three servers under kills, pauses and partitions (scripts/chaos.sh, on the debug build
# made here). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo build --workspace --all-targets
cargo test --workspace
scripts/conformance.sh
CHAOS_PROFILE=debug CHAOS_BUILD=0 scripts/chaos.sh 150 mixed
