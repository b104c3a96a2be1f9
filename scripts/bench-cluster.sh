#!/usr/bin/env bash
# Cluster benchmarks, each beside its peer in the same run:
#  1. KV PUT throughput and latency: three agent servers vs a three-member etcd (Debian's
#     etcd-server), the same load tool sending to each cluster's leader, alternating runs.
#  2. Leader failover: kill -9 of the leader to the first acknowledged write through the others,
#     over N trials; agents at raft_multiplier 1, etcd at its defaults (100ms heartbeat, 1s election).
#  3. Failure detection: kill -9 of a client agent to its serfHealth critical in the catalog, with
#     Consul's LAN gossip timings (probe 1s, timeout 500ms, suspicion mult 4).
# usage: scripts/bench-cluster.sh [seconds per run] [connections] [rounds] [failover trials]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-32}; rounds=${3:-2}; trials=${4:-10}
scripts/setup.sh
command -v etcd >/dev/null || apt-get install -y -qq etcd-server >/dev/null
cargo build --release -q -p agent -p e2e
work=$(mktemp -d)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo '{"performance": {"raft_multiplier": 1}}' >"$work/fast.json"
A=(127.0.0.151 127.0.0.152 127.0.0.153); E=(127.0.0.161 127.0.0.162 127.0.0.163); C=127.0.0.154
now() { date +%s%N; }

start_agent() { # index
  local n=$1
  # Every server is given every server to join, as deployments do (a restarted one finds the others).
  target/release/agent agent -server -bootstrap-expect=3 -node="s$n" -bind="${A[$n]}" -client="${A[$n]}" \
    -retry-join="${A[0]}" -retry-join="${A[1]}" -retry-join="${A[2]}" -retry-interval=200ms -data-dir="$work/a$n" -config-file="$work/fast.json" \
    -dns-port=-1 -log-level=warn >>"$work/a$n.log" 2>&1 &
  pid[a$n]=$!
}
etcd_cluster=""
for i in 0 1 2; do etcd_cluster+="${etcd_cluster:+,}e$i=http://${E[$i]}:2380"; done
start_etcd() { # index
  local n=$1 ip=${E[$1]}
  ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} etcd --name "e$n" --data-dir "$work/e$n" \
    --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
    --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
    --initial-cluster "$etcd_cluster" --initial-cluster-state new --log-level error >>"$work/e$n.log" 2>&1 &
  pid[e$n]=$!
}

# The agent cluster's leader IP, once all three servers agree and autopilot calls it healthy
# with three voters; empty while not.
agent_leader() {
  local l; l=$(curl -sf --max-time 1 "http://${A[0]}:8500/v1/status/leader" | tr -d '"' | cut -d: -f1) || return 0
  for ip in "${A[@]}"; do
    [ "$(curl -sf --max-time 1 "http://$ip:8500/v1/status/leader" | tr -d '"' | cut -d: -f1)" = "$l" ] || return 0
  done
  curl -sf --max-time 1 "http://$l:8500/v1/operator/autopilot/health" >/dev/null || return 0
  local voters; voters=$(curl -sf --max-time 1 "http://$l:8500/v1/operator/raft/configuration" | grep -o '"Voter":true' | wc -l)
  [ "$voters" = 3 ] && echo "$l"
  return 0
}
# The etcd member that leads, once all three are healthy.
etcd_leader() {
  for ip in "${E[@]}"; do curl -sf --max-time 1 "http://$ip:2379/health" | grep -q true || return 0; done
  for ip in "${E[@]}"; do
    curl -sf --max-time 1 -X POST "http://$ip:2379/v3/maintenance/status" -d '{}' |
      python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["header"]["member_id"]!=d["leader"])' &&
      { echo "$ip"; return 0; }
  done
  return 0
}
wait_for() { # command that prints something when ready
  local out
  for _ in $(seq 600); do out=$($1); [ -n "$out" ] && { echo "$out"; return 0; }; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}
others() { # list IP, all IPs ...; prints the others comma-separated
  local skip=$1; shift; local out=""
  for ip in "$@"; do [ "$ip" = "$skip" ] || out+="${out:+,}$ip:$port"; done
  echo "$out"
}
index_of() { local want=$1; shift; local i=0; for ip in "$@"; do [ "$ip" = "$want" ] && echo $i; i=$((i+1)); done; }

for i in 0 1 2; do start_agent $i; start_etcd $i; done
al=$(wait_for agent_leader); el=$(wait_for etcd_leader)
echo "== KV PUT, 3 servers each, to the leader, ${secs}s per run, $conns connections, 128-byte values, $rounds rounds"
for _ in $(seq "$rounds"); do
  target/release/bench kv-put --target agent --addr "$al:8500" --conns "$conns" --secs "$secs"
  target/release/bench kv-put --target etcd --addr "$el:2379" --conns "$conns" --secs "$secs"
done

echo "== Leader failover, kill -9 to the first acknowledged write, $trials trials each"
summary() { sort -n | awk '{a[NR]=$1} END {printf "p50 %d ms  p99 %d ms  max %d ms  (n=%d)\n", a[int((NR+1)/2)], a[int(NR*0.99+0.999)], a[NR], NR}'; }
: >"$work/agent.ms"; : >"$work/etcd.ms"
# One trial: kill the leader of `kind` (agent|etcd), time the first acknowledged write through the
# others (each system as its own clients use it, see `bench first-write`), restart the killed one.
trial() { # kind trial-number
  local kind=$1 t=$2 l n rest t0 ms
  if [ "$kind" = agent ]; then
    l=$(wait_for agent_leader); n=$(index_of "$l" "${A[@]}"); port=8500; rest=$(others "$l" "${A[@]}")
    t0=$(now); kill -9 "${pid[a$n]}"
    ms=$(target/release/bench first-write --target agent --addrs "$rest" --since-ns "$t0" --attempt-ms 10000)
    start_agent "$n"
  else
    l=$(wait_for etcd_leader); n=$(index_of "$l" "${E[@]}"); port=2379; rest=$(others "$l" "${E[@]}")
    t0=$(now); kill -9 "${pid[e$n]}"
    ms=$(target/release/bench first-write --target etcd --addrs "$rest" --since-ns "$t0" --attempt-ms 500)
    start_etcd "$n"
  fi
  printf '%-5s trial %s: leader %s killed, first write after %s ms\n' "$kind" "$t" "$l" "$ms"
  echo "$ms" >>"$work/$kind.ms"
}
for t in $(seq "$trials"); do trial agent "$t"; trial etcd "$t"; done
echo "agent failover: $(summary <"$work/agent.ms")"
echo "etcd  failover: $(summary <"$work/etcd.ms")"

echo "== Failure detection of a killed client agent (Consul's LAN gossip timings)"
for t in 1 2 3; do
  target/release/agent agent -node=client -bind=$C -client=$C -retry-join="${A[0]}" -retry-join="${A[1]}" \
    -retry-join="${A[2]}" -retry-interval=200ms \
    -data-dir="$work/c$t" -dns-port=-1 -log-level=warn >>"$work/c.log" 2>&1 &
  pid[c]=$!
  l=$(wait_for agent_leader)
  serf() {
    curl -sf --max-time 1 "http://$l:8500/v1/health/node/client" |
      python3 -c 'import json,sys; print(*[c["Status"] for c in json.load(sys.stdin) if c["CheckID"]=="serfHealth"])'
  }
  until [ "$(serf)" = passing ]; do sleep 0.1; done
  t0=$(now); kill -9 "${pid[c]}"
  until [ "$(serf)" = critical ]; do sleep 0.02; done
  echo "client trial $t: serfHealth critical $(( ($(now) - t0) / 1000000 )) ms after kill -9"
  curl -sf -X PUT "http://$l:8500/v1/agent/force-leave/client?prune" >/dev/null || true
  until [ -z "$(serf)" ]; do sleep 0.1; done
done
