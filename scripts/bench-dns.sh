#!/usr/bin/env bash
# DNS benchmark: dnsperf against the agent's DNS interface and against dnsmasq answering the same
# name (three A records) from a hosts file, on the same machine, in alternating runs. Each run
# prints queries/s, latency, and the server's own CPU time per query (user+sys of its process):
# dnsperf and both servers share the machine's cores, so on a busy machine q/s swings with the
# load and CPU per query is the steadier figure.
# usage: scripts/bench-dns.sh [seconds per run] [clients] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; clients=${2:-4}; rounds=${3:-2}
scripts/setup.sh
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ]; then apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -q -p agent
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
agent_ip=127.0.0.151; dnsmasq_ip=127.0.0.152
target/release/agent agent -dev -node=dnsbench -bind=$agent_ip -client=$agent_ip -log-level=warn >"$work/agent.log" 2>&1 &
agent_pid=$!; pids+=($agent_pid)
until curl -sf "http://$agent_ip:8500/v1/status/leader" | grep -q 8300; do sleep 0.2; done
for i in 1 2 3; do
  curl -sf -X PUT "http://$agent_ip:8500/v1/catalog/register" \
    -d "{\"Node\":\"web-node-$i\",\"Address\":\"10.0.0.$i\",\"Service\":{\"Service\":\"web\",\"Port\":80}}" >/dev/null
  echo "10.0.0.$i web.service.consul" >>"$work/hosts"
done
/usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$work/hosts" \
  --listen-address=$dnsmasq_ip --port=8600 --bind-interfaces --cache-size=1000 --pid-file="$work/dnsmasq.pid" &
dnsmasq_pid=$!; pids+=($dnsmasq_pid)
echo "web.service.consul A" >"$work/queries"
# CPU ticks (user+sys) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
run() {
  local before out
  before=$(ticks "$3")
  out=$(dnsperf -s "$1" -p 8600 -d "$work/queries" -l "$secs" -c "$clients" -q 200 2>&1)
  echo "$out" | awk -v who="$2" -v cpu=$(( $(ticks "$3") - before )) -v hz="$hz" '
    /Queries completed/ {n=$3} /Queries per second/ {q=$4} /Average Latency/ {l=$4} /Latency StdDev/ {sd=$4}
    /Queries lost/ {lost=$3}
    END {printf "dns %-8s %10.0f q/s  avg latency %.3f ms (sd %.3f ms)  lost %s  %5.2f us CPU/query\n",
      who, q, l*1000, sd*1000, lost, n ? cpu / hz * 1e6 / n : 0}'
}
dig_ok() { dnsperf -s "$1" -p 8600 -d "$work/queries" -n 1 >/dev/null 2>&1; }
until dig_ok $agent_ip && dig_ok $dnsmasq_ip; do sleep 0.2; done
echo "== dnsperf, ${secs}s per run, $clients clients, 'web.service.consul A' (3 records), $rounds rounds"
for r in $(seq "$rounds"); do
  run $agent_ip agent $agent_pid
  run $dnsmasq_ip dnsmasq $dnsmasq_pid
done
