#!/usr/bin/env bash
# The demo: a local cluster the way the seeds deploy Consul — three servers (-bootstrap-expect=3,
# the second and third joining the first), two clients joining with -retry-join, the web UI on
# every agent, a service with an HTTP check on each client, an nginx-style upstream file kept
# current by `template`, and `lb` on port 88 in front of all of it. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p agent -p lb -p template
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
servers=(127.0.0.11 127.0.0.12 127.0.0.13); clients=(127.0.0.14 127.0.0.15)
agent() { # name ip flags...
  local name=$1 ip=$2; shift 2
  target/release/agent agent -node="$name" -bind="$ip" -client="$ip" -data-dir="$dir/$name" -ui -dns-port=8600 "$@" \
    >"$dir/$name.log" 2>&1 &
  pids+=($!)
}
agent s1 "${servers[0]}" -server -bootstrap-expect=3
agent s2 "${servers[1]}" -server -bootstrap-expect=3 -retry-join="${servers[0]}"
agent s3 "${servers[2]}" -server -bootstrap-expect=3 -retry-join="${servers[0]}"
for i in 0 1; do agent "c$((i + 1))" "${clients[$i]}" -retry-join="${servers[0]}" -retry-join="${servers[1]}"; done
until curl -sf "http://${servers[0]}:8500/v1/status/leader" | grep -q 8300; do sleep 0.2; done
echo "==> cluster up: 3 servers, 2 clients; UI at http://${servers[0]}:8500/ui/ (any agent serves it)"
target/release/agent members -http-addr="${servers[0]}:8500" || true

# One demo backend per client (python's http.server), registered on that client with an HTTP check.
for i in 0 1; do
  ip=${clients[$i]}; n=$((i + 1))
  mkdir -p "$dir/www$n" && echo "hello from web-$n" >"$dir/www$n/index.html"
  python3 -m http.server 18081 --bind "$ip" --directory "$dir/www$n" >/dev/null 2>&1 &
  pids+=($!)
  curl -sf -X PUT "http://$ip:8500/v1/agent/service/register" -d "{
    \"ID\":\"web-$n\",\"Name\":\"web\",\"Address\":\"$ip\",\"Port\":18081,\"Tags\":[\"urlprefix-/web strip=/web\"],
    \"Check\":{\"HTTP\":\"http://$ip:18081/\",\"Interval\":\"1s\"}}"
done
echo "==> service web registered on both clients (HTTP checks every 1s)"

# The seeds' nginx upstream, rendered by template (no nginx needed to watch it change).
echo 'upstream web { ip_hash;{{range service "web"}} server {{.Address}}:{{.Port}};{{end}} }' >"$dir/web.ctmpl"
target/release/template -consul-addr="${clients[0]}:8500" -template "$dir/web.ctmpl:$dir/web.conf" \
  >"$dir/template.log" 2>&1 &
pids+=($!)
echo "==> template keeps $dir/web.conf current: watch it with  cat $dir/web.conf"

lb_addrs=()
for ip in "${servers[@]}" "${clients[@]}"; do lb_addrs+=("-consul-addr=$ip:8500"); done
target/release/lb -listen=0.0.0.0:88 "${lb_addrs[@]}" >"$dir/lb.log" 2>&1 &
pids+=($!)
echo "==> lb on :88 — try:"
echo "      curl -H 'Host: web.service.consul' http://127.0.0.1:88/"
echo "      curl http://127.0.0.1:88/web/          (the urlprefix tag)"
echo "      curl http://127.0.0.1:88/v1/status/leader   and   http://127.0.0.1:88/ui/"
echo "      dig @${servers[0]} -p 8600 web.service.consul SRV"
echo "==> kill the leader and watch: kill -9 \$(pgrep -f 'node=s1 ')  (its PID is in 'ps'); logs in $dir"
echo "==> Ctrl-C stops everything"
wait
