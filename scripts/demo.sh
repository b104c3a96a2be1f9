#!/usr/bin/env bash
# The demo: a local server agent with the web UI, a registered service with a health check,
# and (once built) lb on port 88 in front of it. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p agent -p lb -p template
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
ip=127.0.0.11
target/release/agent agent -server -bootstrap-expect=1 -node=s1 -bind=$ip -client=$ip -data-dir="$dir/s1" -ui \
  -dns-port=-1 >"$dir/s1.log" 2>&1 &
pids+=($!)
until curl -sf "http://$ip:8500/v1/status/leader" | grep -q 8300; do sleep 0.2; done
echo "==> agent s1 is up: http://$ip:8500/ui/"
# A demo backend: python's http.server, with an HTTP health check.
mkdir -p "$dir/www" && echo "hello from web-1" >"$dir/www/index.html"
python3 -m http.server 18081 --bind 127.0.0.21 --directory "$dir/www" >/dev/null 2>&1 &
pids+=($!)
curl -sf -X PUT "http://$ip:8500/v1/agent/service/register" -d '{
  "ID":"web-1","Name":"web","Address":"127.0.0.21","Port":18081,"Tags":["urlprefix-/web strip=/web"],
  "Check":{"HTTP":"http://127.0.0.21:18081/","Interval":"1s"}}'
echo "==> registered service web (127.0.0.21:18081) with an HTTP check"
if target/release/lb --help >/dev/null 2>&1; then
  target/release/lb -listen=0.0.0.0:88 -consul-addr=$ip:8500 >"$dir/lb.log" 2>&1 &
  pids+=($!)
  echo "==> lb on :88 — try: curl -H 'Host: web.service.consul' http://127.0.0.1:88/  and  http://127.0.0.1:88/ui/"
fi
echo "==> logs in $dir; Ctrl-C to stop"
wait
