#!/usr/bin/env bash
# Benchmarks of the agent core, each beside its peer in the same run:
#  1. KV PUT throughput and latency: one server agent vs a single-member etcd (Debian's
#     etcd-server), same load tool, same connections, same duration, alternating runs.
#  2. 10,000 blocking queries parked on one agent, then their keys written: write→answer
#     latency and the agent's memory per waiting query.
# usage: scripts/bench.sh [seconds per run] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-32}; rounds=${3:-2}
scripts/setup.sh
command -v etcd >/dev/null || { apt-get install -y -qq etcd-server >/dev/null; }
cargo build --release -q -p agent -p e2e
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
agent_ip=127.0.0.141; etcd_ip=127.0.0.142
target/release/agent agent -server -bootstrap-expect=1 -node=bench -bind=$agent_ip -client=$agent_ip \
  -data-dir="$work/agent" -dns-port=-1 -log-level=warn >"$work/agent.log" 2>&1 &
agent_pid=$!; pids+=($agent_pid)
ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls http://$etcd_ip:2379 --advertise-client-urls http://$etcd_ip:2379 \
  --listen-peer-urls http://$etcd_ip:2380 --initial-advertise-peer-urls http://$etcd_ip:2380 \
  --initial-cluster bench=http://$etcd_ip:2380 --log-level error >"$work/etcd.log" 2>&1 &
pids+=($!)
until curl -sf "http://$agent_ip:8500/v1/status/leader" | grep -q 8300; do sleep 0.2; done
until curl -sf "http://$etcd_ip:2379/health" | grep -q true; do sleep 0.2; done
echo "== KV PUT, ${secs}s per run, $conns connections, 128-byte values, $rounds rounds (fsync'd writes on both)"
for r in $(seq "$rounds"); do
  target/release/bench kv-put --target agent --addr $agent_ip:8500 --conns "$conns" --secs "$secs"
  target/release/bench kv-put --target etcd --addr $etcd_ip:2379 --conns "$conns" --secs "$secs"
done
echo "== 10,000 blocking queries on one fresh agent"
kill $agent_pid; wait $agent_pid 2>/dev/null || true
target/release/agent agent -server -bootstrap-expect=1 -node=bench2 -bind=127.0.0.143 -client=127.0.0.143 \
  -data-dir="$work/agent2" -dns-port=-1 -log-level=warn >"$work/agent2.log" 2>&1 &
agent_pid=$!; pids+=($agent_pid)
until curl -sf "http://127.0.0.143:8500/v1/status/leader" | grep -q 8300; do sleep 0.2; done
target/release/bench blocking --addr 127.0.0.143:8500 --pid $agent_pid --watchers 10000 --conns 50
