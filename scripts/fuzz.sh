#!/usr/bin/env bash
# Runs every fuzz target (fuzz/src/lib.rs's TARGETS) for SECONDS each (default 60) and prints a
# table: target, engine, executions, executions per second, crashes. Exits non-zero if any
# target crashed; crashing inputs are saved under fuzz/crashes/<target>/.
#
#   FUZZ_ENGINE=libfuzzer  coverage-guided libFuzzer: the targets built with the
#                          sanitizer-coverage flags stable rustc accepts (-Cpasses=sancov-module),
#                          optimized, in target/libfuzzer (a build of its own, ~10 min on 2 cores)
#   FUZZ_ENGINE=stable     the fuzz binary's own mutation loop (a debug build, as the tests use)
#   (unset)                libfuzzer if it builds here, else stable
#   FUZZ_SEED=N            the stable engine's seed (printed; a run is repeatable from it)
#   FUZZ_TARGETS="a b"     only these targets
#
# Inputs that found something new are kept in target/fuzz/corpus/<target>/ and used again next
# time; the seed inputs are fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
engine=${FUZZ_ENGINE:-auto}
export CARGO_TERM_COLOR=never
work=target/fuzz/corpus
mkdir -p "$work"

build_stable() {
  local t0=$SECONDS
  cargo build -q -p fuzz --bin fuzz
  echo "==> stable engine built in $((SECONDS - t0)) s"
}

host=$(rustc -vV | sed -n 's/^host: //p')
lf_bin=target/libfuzzer/$host/release/fuzz-libfuzzer
build_libfuzzer() {
  local t0=$SECONDS
  # What cargo-fuzz passes, minus the sanitizer (-Zsanitizer needs nightly): coverage counters,
  # comparison tracing, and the checks of a debug build in an optimized one. A target triple is
  # named so that build scripts and proc macros are built without them.
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build -q --release -p fuzz --features libfuzzer --bin fuzz-libfuzzer \
      --target "$host" --target-dir target/libfuzzer || return 1
  echo "==> libFuzzer engine built in $((SECONDS - t0)) s"
}

if [ "$engine" = auto ]; then
  if build_libfuzzer; then engine=libfuzzer; else
    echo "==> libFuzzer did not build here; using the stable engine"
    engine=stable
  fi
elif [ "$engine" = libfuzzer ]; then
  build_libfuzzer
fi

if [ "$engine" = stable ]; then
  build_stable
  args=(--seconds "$secs" --work "$work")
  [ -n "${FUZZ_SEED:-}" ] && args+=(--seed "$FUZZ_SEED")
  # shellcheck disable=SC2086
  exec target/debug/fuzz "${args[@]}" ${FUZZ_TARGETS:-}
fi

[ "$engine" = libfuzzer ] || { echo "FUZZ_ENGINE must be libfuzzer or stable" >&2; exit 2; }
# An unknown target name makes the binary list them all (and exit 2).
targets=${FUZZ_TARGETS:-$({ FUZZ_TARGET=list "$lf_bin" 2>&1 || true; } | sed -n 's/^targets: //p')}
[ -n "$targets" ] || { echo "no targets listed by $lf_bin" >&2; exit 1; }
logs=$(mktemp -d)
rows=()
failed=0
for t in $targets; do
  mkdir -p "$work/$t" "fuzz/crashes/$t"
  echo "==> $t: libFuzzer for $secs s"
  # The stable engine's dictionary and length limit for this target.
  max_len=$(FUZZ_TARGET=$t FUZZ_DESCRIBE="$logs/$t.dict" "$lf_bin" 2>/dev/null | sed -n 's/^max_len //p')
  set +e
  # The working corpus first: libFuzzer adds what it finds there, never to the seeds.
  FUZZ_TARGET=$t "$lf_bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len="${max_len:-4096}" \
    -dict="$logs/$t.dict" -print_final_stats=1 -artifact_prefix="fuzz/crashes/$t/" "$work/$t" "fuzz/corpus/$t" \
    >"$logs/$t" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t" | tail -1)
  crashes=0
  if [ "$rc" -ne 0 ]; then
    crashes=1
    failed=1
    grep -E "panicked at|ERROR: libFuzzer|Test unit written|SUMMARY" "$logs/$t" | head -5 || true
  fi
  rows+=("$(printf '%-16s %-9s %10s %9s %7s' "$t" libfuzzer "${execs:-?}" "${rate:-?}" "$crashes")")
done
printf '\n%-16s %-9s %10s %9s %7s\n' target engine execs exec/s crashes
printf '%s\n' "${rows[@]}"
echo "(libFuzzer logs: $logs)"
exit "$failed"
