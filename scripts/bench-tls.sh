#!/usr/bin/env bash
# What TLS costs, both clusters started in the same run and measured in alternating rounds:
#  1. KV PUT throughput to the leader of three servers with TLS on every port (HTTPS API only,
#     verify_incoming, verify_outgoing, verify_server_hostname, gossip encryption; certificates
#     made by `agent tls`) vs three identical servers without TLS or gossip key.
#  2. KV GET throughput from each leader: HTTPS with a client certificate vs plain HTTP.
# The load tool keeps its connections alive (one TLS handshake per connection), as clients do.
# usage: scripts/bench-tls.sh [seconds per run] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-32}; rounds=${3:-2}
scripts/setup.sh
cargo build --release -q -p agent -p e2e
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
P=(127.0.0.171 127.0.0.172 127.0.0.173); T=(127.0.0.181 127.0.0.182 127.0.0.183)
agent=$PWD/target/release/agent

# Certificates as an operator makes them: a CA, one server certificate naming every server's IP
# (and server.dc1.consul), a client certificate for the load tool.
( cd "$work"
  $agent tls ca create >/dev/null
  $agent tls cert create -server -dc dc1 \
    -additional-ipaddress "${T[0]}" -additional-ipaddress "${T[1]}" -additional-ipaddress "${T[2]}" >/dev/null
  $agent tls cert create -client >/dev/null )
ca=$work/consul-agent-ca.pem; cert=$work/dc1-client-consul-0.pem; key=$work/dc1-client-consul-0-key.pem
cat >"$work/tls.json" <<EOF
{"ports": {"http": -1, "https": 8501},
 "tls": {"defaults": {"ca_file": "$ca", "cert_file": "$work/dc1-server-consul-0.pem",
                      "key_file": "$work/dc1-server-consul-0-key.pem",
                      "verify_incoming": true, "verify_outgoing": true},
         "internal_rpc": {"verify_server_hostname": true}}}
EOF
echo '{"performance": {"raft_multiplier": 1}}' >"$work/fast.json"
gossip_key=$($agent keygen)

start() { # name ip join-ips... -- extra flags
  local name=$1 ip=$2; shift 2
  local joins=()
  while [ "$1" != -- ]; do joins+=("-retry-join=$1"); shift; done
  shift
  $agent agent -server -bootstrap-expect=3 -node="$name" -bind="$ip" -client="$ip" "${joins[@]}" \
    -retry-interval=200ms -data-dir="$work/$name" -config-file="$work/fast.json" -dns-port=-1 \
    -log-level=warn "$@" >>"$work/$name.log" 2>&1 &
  pids+=($!)
}
for i in 0 1 2; do
  start "plain$i" "${P[$i]}" "${P[@]}" --
  start "tls$i" "${T[$i]}" "${T[@]}" -- -config-file="$work/tls.json" -encrypt="$gossip_key"
done

plain_leader() { curl -sf --max-time 1 "http://${P[0]}:8500/v1/status/leader" | tr -d '"' | cut -d: -f1; }
tls_leader() {
  curl -sf --max-time 1 --cacert "$ca" --cert "$cert" --key "$key" "https://${T[0]}:8501/v1/status/leader" |
    tr -d '"' | cut -d: -f1
}
wait_for() { # command that prints something when ready
  local out
  for _ in $(seq 600); do out=$($1 || true); [ -n "$out" ] && { echo "$out"; return 0; }; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}
pl=$(wait_for plain_leader); tl=$(wait_for tls_leader)
# Every server a voter before measuring, so both clusters replicate to the same three.
voters() { # url curl-flags...
  local url=$1; shift
  curl -sf --max-time 1 "$@" "$url/v1/operator/raft/configuration" | grep -o '"Voter":true' | wc -l
}
until [ "$(voters "http://$pl:8500")" = 3 ]; do sleep 0.1; done
until [ "$(voters "https://$tl:8501" --cacert "$ca" --cert "$cert" --key "$key")" = 3 ]; do sleep 0.1; done
curl -sf -X PUT "http://$pl:8500/v1/kv/bench/get" -d 'value' >/dev/null
curl -sf -X PUT --cacert "$ca" --cert "$cert" --key "$key" "https://$tl:8501/v1/kv/bench/get" -d 'value' >/dev/null

tlsargs=(--ca "$ca" --client-cert "$cert" --client-key "$key")
rate() { awk '{for (i = 1; i <= NF; i++) if ($i == "req/s") print $(i-1)}'; }
row() { # label plain-line tls-line
  local a b
  a=$(echo "$2" | rate); b=$(echo "$3" | rate)
  printf '%-8s %10s req/s %10s req/s   %5s%%\n' "$1" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.0f", 100*b/a}')"
}
echo "== 3 servers each, to the leader, ${secs}s per run, $conns connections, 128-byte values, $rounds rounds"
echo "   plain: HTTP, no gossip key.  tls: HTTPS API only, mutual TLS on the server port, gossip key"
printf '%-8s %16s %16s   %s\n' "" "plain" "tls" "tls/plain"
for r in $(seq "$rounds"); do
  a=$(target/release/bench kv-put --addr "$pl:8500" --conns "$conns" --secs "$secs" 2>&1 | grep req/s) || true
  b=$(target/release/bench kv-put --addr "$tl:8501" --conns "$conns" --secs "$secs" "${tlsargs[@]}" 2>&1 | grep req/s) || true
  row "PUT #$r" "$a" "$b"
  echo "         $a"; echo "         $b"
  a=$(target/release/bench kv-get --addr "$pl:8500" --conns "$conns" --secs "$secs" 2>&1 | grep req/s) || true
  b=$(target/release/bench kv-get --addr "$tl:8501" --conns "$conns" --secs "$secs" "${tlsargs[@]}" 2>&1 | grep req/s) || true
  row "GET #$r" "$a" "$b"
  echo "         $a"; echo "         $b"
done
