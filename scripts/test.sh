#!/usr/bin/env bash
# The whole test suite: unit and integration tests of every crate (real agents on 127.0.0.x),
# a short run of every fuzz target, then the py-consul client's own test suite against our
# agent, then a 150-second Jepsen-style run of three servers under kills, pauses and partitions
# (scripts/chaos.sh, on the debug build made here), then the Docker images built FROM scratch
# and the compose walk-through (tests/docker/run.sh: it installs docker.io and docker-compose
# and starts a dockerd of its own when none runs). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo build --workspace --all-targets
cargo test --workspace
# Each fuzz target for 20 s with the stable engine (built by the line above): under 3 minutes.
FUZZ_ENGINE=stable scripts/fuzz.sh 20
scripts/conformance.sh
CHAOS_PROFILE=debug CHAOS_BUILD=0 scripts/chaos.sh 150 mixed
# The images from the debug binaries built above: a release build would not fit CI's time.
DOCKER_PROFILE=debug tests/docker/run.sh
