#!/usr/bin/env bash
# Runs the py-consul client's own test suite (shipped inside its package) against our agent, the
# whole of it, and fails unless every test passes (CONFORMANCE_MIN_PERCENT lowers the bar).
set -euo pipefail
cd "$(dirname "$0")/.."
runner=../shared/conformance/py-consul/run
if [ ! -x "$runner" ]; then
  echo "conformance: $runner not found (shared/ is not beside the checkout); skipped"
  exit 0
fi
bin=${AGENT_BIN:-${CARGO_TARGET_DIR:-target}/debug/agent}
if [ ! -x "$bin" ]; then
  echo "conformance: no agent binary at $bin (run 'cargo build --workspace' first or set AGENT_BIN)"
  exit 1
fi
files=(tests)
report=$(mktemp --suffix=.xml)
set +e
"$runner" "$bin" "${files[@]}" --junitxml="$report" 2>&1 | tail -40
set -e
# The JUnit report is the count of record (pytest's last line is not always printed).
read -r passed failed total < <(python3 - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0, 0)  # no report: pytest did not run; counted as a failure below
    sys.exit(0)
suites = [root] if root.tag == "testsuite" else list(root)
tests = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(tests - bad - skipped, bad, tests - skipped)
PY
)
echo "conformance: $passed passed, $failed failed (py-consul's own test suite)"
min=${CONFORMANCE_MIN_PERCENT:-100}
if [ "$total" -eq 0 ] || [ $((passed * 100)) -lt $((total * min)) ]; then
  echo "conformance: below ${min}%"
  exit 1
fi
