#!/usr/bin/env bash
# Runs the py-consul client's own test suite (shipped inside its PyPI package) against our agent,
# on the files issue 2 names, and fails if fewer than the required share pass.
set -euo pipefail
cd "$(dirname "$0")/.."
runner=../shared/conformance/py-consul/run
if [ ! -x "$runner" ]; then
  echo "conformance: $runner not found (shared/ is not beside the checkout); skipped"
  exit 0
fi
bin=${AGENT_BIN:-target/debug/agent}
[ -x "$bin" ] || cargo build -p agent
files=(tests/api/test_kv.py tests/api/test_session.py tests/api/test_agent.py tests/api/test_catalog.py
       tests/api/test_health.py tests/api/test_status.py tests/api/test_event.py tests/api/test_txn.py
       tests/test_std.py tests/test_aio.py tests/test_base.py tests/test_callback.py tests/test_utils.py)
out=$(mktemp)
set +e
"$runner" "$bin" "${files[@]}" -p no:randomly 2>&1 | tee "$out" | tail -40
set -e
summary=$(grep -E '^[=]* ?[0-9]+ (passed|failed)' "$out" | tail -1)
passed=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
failed=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
errors=$(echo "$summary" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+' || echo 0)
total=$((passed + failed + errors))
echo "conformance: $passed passed, $failed failed, $errors errors of $total (py-consul, issue 2's files)"
min=${CONFORMANCE_MIN_PERCENT:-90}
if [ "$total" -eq 0 ] || [ $((passed * 100)) -lt $((total * min)) ]; then
  echo "conformance: below ${min}%"
  exit 1
fi
