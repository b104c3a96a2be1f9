#!/usr/bin/env bash
# What ACLs cost: KV PUT and GET against two identical single-server agents in the same run,
# one with ACLs off and one with `default_policy = "deny"` answering a token whose policy is
# `key_prefix "bench/" { policy = "write" }` (resolved and checked on every request), in
# alternating rounds. Goal: the checks cost at most 5% throughput.
# usage: scripts/bench-acl.sh [seconds per run] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-32}; rounds=${3:-3}
scripts/setup.sh
cargo build --release -q -p agent -p e2e
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mgmt=3f1f5e0a-9d1b-4c0e-8f5a-6a1f0c2b7d11
off=127.0.0.151; on=127.0.0.152
echo "{\"acl\": {\"enabled\": true, \"default_policy\": \"deny\", \"tokens\": {\"initial_management\": \"$mgmt\"}}}" >"$work/acl.json"
start() { # ip name [extra flags]
  local ip=$1 name=$2; shift 2
  target/release/agent agent -server -bootstrap-expect=1 -node="$name" -bind="$ip" -client="$ip" \
    -data-dir="$work/$name" -dns-port=-1 -log-level=warn "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  until curl -sf "http://$ip:8500/v1/status/leader" | grep -q 8300; do sleep 0.2; done
}
start $off acl-off
start $on acl-on -config-file="$work/acl.json"
until curl -sf -H "X-Consul-Token: $mgmt" "http://$on:8500/v1/acl/token/self" >/dev/null; do sleep 0.2; done
policy=$(curl -sf -X PUT -H "X-Consul-Token: $mgmt" "http://$on:8500/v1/acl/policy" \
  -d '{"Name":"bench","Rules":"key_prefix \"bench/\" { policy = \"write\" }"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["ID"])')
token=$(curl -sf -X PUT -H "X-Consul-Token: $mgmt" "http://$on:8500/v1/acl/token" \
  -d "{\"Description\":\"bench\",\"Policies\":[{\"ID\":\"$policy\"}]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretID"])')
curl -sf -X PUT "http://$off:8500/v1/kv/bench/get" -d 'value' >/dev/null
curl -sf -X PUT -H "X-Consul-Token: $token" "http://$on:8500/v1/kv/bench/get" -d 'value' >/dev/null
echo "== KV PUT and GET, ${secs}s per run, $conns connections, $rounds rounds: ACLs off vs on (deny + a prefix token)"
for r in $(seq "$rounds"); do
  target/release/bench kv-put --addr $off:8500 --conns "$conns" --secs "$secs"
  target/release/bench kv-put --addr $on:8500 --conns "$conns" --secs "$secs" --token "$token"
  target/release/bench kv-get --addr $off:8500 --conns "$conns" --secs "$secs"
  target/release/bench kv-get --addr $on:8500 --conns "$conns" --secs "$secs" --token "$token"
done
