#!/bin/sh
# End to end, by hand: an agent in -dev mode, two instances of "test", nginx proxying to them,
# and `template` rewriting nginx's upstream (and reloading nginx) when an instance's health
# changes. Needs nginx (Debian: nginx-light), python3 and curl.
#
#   AGENT=target/debug/agent TEMPLATE=target/debug/template examples/template-nginx/run.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
AGENT=${AGENT:-agent}
TEMPLATE=${TEMPLATE:-template}
ip=127.0.0.170
http=$ip:8500
work=$(mktemp -d)
pids=""
cleanup() {
  nginx -p "$work" -c nginx.conf -s stop 2>/dev/null || true
  [ -n "$pids" ] && kill $pids 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

mkdir -p "$work/vhosts" "$work/tmp" "$work/b1" "$work/b2"
cp "$here/nginx.conf" "$here/test.ctmpl" "$work/"
echo one > "$work/b1/index.html"
echo two > "$work/b2/index.html"
(cd "$work/b1" && exec python3 -m http.server --bind 127.0.0.171 8081) >/dev/null 2>&1 &
pids="$pids $!"
(cd "$work/b2" && exec python3 -m http.server --bind 127.0.0.172 8082) >/dev/null 2>&1 &
pids="$pids $!"

until curl -sf http://127.0.0.171:8081/ >/dev/null && curl -sf http://127.0.0.172:8082/ >/dev/null; do sleep 0.1; done

"$AGENT" agent -dev -node=example -bind=$ip -client=$ip >"$work/agent.log" 2>&1 &
pids="$pids $!"
until curl -sf "http://$http/v1/status/leader" | grep -q .; do sleep 0.2; done

for n in 1 2; do
  curl -sf -X PUT "http://$http/v1/agent/service/register" -d "{
    \"ID\": \"test$n\", \"Name\": \"test\", \"Address\": \"127.0.0.17$n\", \"Port\": 808$n,
    \"Check\": {\"CheckID\": \"test$n-ttl\", \"TTL\": \"1h\", \"Status\": \"passing\"}}"
done

# The first render must exist before nginx starts (its config includes the file).
"$TEMPLATE" -consul-addr=$http -once -template "$work/test.ctmpl:$work/vhosts/test.conf"
nginx -p "$work" -c nginx.conf
"$TEMPLATE" -consul-addr=$http -log-level=info \
  -template "$work/test.ctmpl:$work/vhosts/test.conf:nginx -p $work -c nginx.conf -s reload" 2>"$work/template.log" &
pids="$pids $!"

echo "--- both instances passing:"; cat "$work/vhosts/test.conf"
serving=$(curl -s http://$ip:8088/)
echo "nginx (ip_hash) sends us to: $serving"

# Fail the instance nginx is sending us to.
n=1; [ "$serving" = two ] && n=2
curl -sf -X PUT "http://$http/v1/agent/check/fail/test$n-ttl?note=example"
until ! grep -q "127.0.0.17$n" "$work/vhosts/test.conf"; do sleep 0.1; done
echo "--- test$n critical:"; cat "$work/vhosts/test.conf"
sleep 0.5 # nginx finishes its graceful reload
for i in 1 2 3 4; do curl -s http://$ip:8088/; done
