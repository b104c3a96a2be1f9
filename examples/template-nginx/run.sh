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
ip=127.0.0.70
http=$ip:8500
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; nginx -p "$work" -c nginx.conf -s stop 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/vhosts" "$work/tmp" "$work/b1" "$work/b2"
cp "$here/nginx.conf" "$here/test.ctmpl" "$work/"
echo one > "$work/b1/index.html"
echo two > "$work/b2/index.html"
(cd "$work/b1" && exec python3 -m http.server --bind 127.0.0.71 8081) >/dev/null 2>&1 &
(cd "$work/b2" && exec python3 -m http.server --bind 127.0.0.72 8082) >/dev/null 2>&1 &

"$AGENT" agent -dev -node=example -bind=$ip -client=$ip >"$work/agent.log" 2>&1 &
until curl -sf "http://$http/v1/status/leader" | grep -q .; do sleep 0.2; done

for n in 1 2; do
  curl -sf -X PUT "http://$http/v1/agent/service/register" -d "{
    \"ID\": \"test$n\", \"Name\": \"test\", \"Address\": \"127.0.0.7$n\", \"Port\": 808$n,
    \"Check\": {\"CheckID\": \"test$n-ttl\", \"TTL\": \"1h\", \"Status\": \"passing\"}}"
done

# The first render must exist before nginx starts (its config includes the file).
"$TEMPLATE" -consul-addr=$http -once -template "$work/test.ctmpl:$work/vhosts/test.conf"
nginx -p "$work" -c nginx.conf
"$TEMPLATE" -consul-addr=$http -log-level=info \
  -template "$work/test.ctmpl:$work/vhosts/test.conf:nginx -p $work -c nginx.conf -s reload" &

echo "--- both instances passing:"; cat "$work/vhosts/test.conf"
curl -s http://$ip:8088/

curl -sf -X PUT "http://$http/v1/agent/check/fail/test2-ttl?note=example"
until ! grep -q 127.0.0.72 "$work/vhosts/test.conf"; do sleep 0.1; done
echo "--- test2 critical:"; cat "$work/vhosts/test.conf"
sleep 0.5 # nginx finishes its graceful reload
for i in 1 2 3 4; do curl -s http://$ip:8088/; done
