#!/usr/bin/env bash
# The compose walk-through of issue 18, against the images examples/docker/build made and the
# dockerd that DOCKER_HOST (or the default socket) names. Brings examples/docker/docker-compose.yml
# up, checks, tears it down; exits non-zero on the first thing that does not hold:
#   1. the three servers elect a leader; all six agents are alive
#   2. KV written on server1 is read on server3
#   3. the leader's container is stopped (SIGTERM reaches the agent through PID 1) and a new
#      leader is elected, while `curl localhost:88/v1/status/leader` keeps answering 200
#   3b. an orphan handed to PID 1 is reaped (no zombie left)
#   4. the demo service's check fails (its nginx stops): the rendered upstream file, nginx on
#      8088 and lb on 88 drop that instance, and take it back when it passes again
#   5. a container started with SERVICE_NAME=x appears in the catalog and leaves when stopped
#   6. the seeds' `docker run` lines (default bridge, -bind=0.0.0.0, -join by IP), with only the
#      image name changed, form a three-server cluster (one with CONSUL_BIND_INTERFACE=eth0)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
compose_file=$root/examples/docker/docker-compose.yml
if command -v docker-compose >/dev/null; then
  compose=(docker-compose -f "$compose_file")
else
  compose=(docker compose -f "$compose_file")
fi
# The socket client3 watches: the one this docker talks to.
case "${DOCKER_HOST:-}" in
  unix://*) export DOCKER_SOCKET=${DOCKER_HOST#unix://} ;;
  *) export DOCKER_SOCKET=/var/run/docker.sock ;;
esac
LB=${LB_URL:-http://127.0.0.1:${LB_PORT:-88}}
NGINX=${NGINX_URL:-http://127.0.0.1:${NGINX_PORT:-8088}}
tmp=$(mktemp -d)
started=$(date +%s)

fail() {
  echo "walkthrough: FAILED: $*" >&2
  for c in server1 server2 server3 client1 client2 client3 template lb web3; do
    echo "---- last log lines of $c" >&2
    docker logs --tail 15 "$c" 2>&1 | sed 's/^/    /' >&2 || true
  done
  exit 1
}
teardown() {
  docker rm -f x1 z1 seed1 seed2 seed3 >/dev/null 2>&1 || true
  "${compose[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap teardown EXIT
step() { echo "==> [$(($(date +%s) - started))s] $*"; }
# until SECONDS WHAT CMD...: runs CMD until it succeeds, or fails the walk-through.
until_ok() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "no $what within ${limit}s (last: $("$@" 2>&1 | tail -3))"
    sleep 0.5
  done
}
ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }
peers() { docker exec server1 agent operator raft list-peers; }
leader() { curl -sf --max-time 5 "$LB/v1/status/leader" | tr -d '"'; }
container_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
passing_web() { curl -sf --max-time 5 "$LB/v1/health/service/web?passing" | json 'print(len(d))'; }
upstream() { docker cp template:/etc/nginx/conf.d/upstream.conf - | tar -xO; }
# answers URL [HEADER]: the distinct bodies of 12 requests.
answers() {
  local i
  for i in $(seq 12); do curl -s --max-time 5 ${2:+-H "$2"} "$1"; done | sort -u
}

# Consul's columns: Node ID Address State Voter RaftProtocol ...
voters() { peers | awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "Voter") v = i; next } v && $v == "true"' ; }
three_voters() { [ "$(voters | wc -l)" -eq 3 ] && voters | grep -q ' leader '; }
six_alive() { [ "$(docker exec server1 agent members | grep -c ' alive ')" -eq 6 ]; }
web_is() { [ "$(passing_web)" = "$1" ]; }
upstream_has() { [ "$(upstream | grep -c '^ *server ')" -eq "$1" ]; }

step "docker-compose up -d (${compose[*]})"
"${compose[@]}" up -d >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "compose up"; }

step "1. three servers elect a leader, six agents alive"
until_ok 90 "three raft voters with a leader" three_voters
peers | sed 's/^/    /'
until_ok 60 "six alive members" six_alive
docker exec server1 agent members | sed 's/^/    /'

step "2. KV written on server1, read on server3"
docker exec server1 agent kv put walkthrough/greeting "hello from server1" >/dev/null
got=$(docker exec server3 agent kv get walkthrough/greeting)
[ "$got" = "hello from server1" ] || fail "server3 read '$got'"
echo "    server3: $got"

step "4a. three passing web instances, in the upstream file, nginx and lb"
until_ok 60 "three passing web instances" web_is 3
until_ok 30 "three servers in the rendered upstream" upstream_has 3
upstream | sed 's/^/    /'
until_ok 30 "three web instances behind nginx" bash -c "[ \$(for i in \$(seq 12); do curl -s --max-time 5 $NGINX/; done | sort -u | grep -c 'web at') -eq 3 ]"
answers "$LB/" "Host: web.service.consul" | sed 's/^/    lb: /'

step "3. stop the leader's container; a new leader while lb keeps answering"
old=$(leader)
[ -n "$old" ] || fail "no leader through lb"
old_ip=${old%:*}
victim=""
for s in server1 server2 server3; do [ "$(container_ip $s)" = "$old_ip" ] && victim=$s; done
[ -n "$victim" ] || fail "leader $old is none of the servers"
: >"$tmp/probe"
(
  while [ ! -e "$tmp/stop-probe" ]; do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 "$LB/v1/status/leader" >>"$tmp/probe" || echo "curl-$?" >>"$tmp/probe"
    sleep 0.2
  done
) &
prober=$!
sleep 1
t0=$(ms)
docker stop -t 10 "$victim" >/dev/null
t_stop=$(secs $(($(ms) - t0)))
code=$(docker inspect -f '{{.State.ExitCode}}' "$victim")
echo "    stopped $victim (leader $old) in ${t_stop}s, exit code $code"
[ "$code" != 137 ] || fail "$victim was killed after the stop timeout: SIGTERM did not reach the agent"
new_leader() { local l; l=$(leader) && [ -n "$l" ] && [ "$l" != "$old" ]; }
until_ok 60 "new leader" new_leader
t_elect=$(secs $(($(ms) - t0)))
echo "    new leader $(leader) ${t_elect}s after the stop"
sleep 3
touch "$tmp/stop-probe"
wait $prober
total=$(wc -l <"$tmp/probe")
ok=$(grep -c '^200$' "$tmp/probe" || true)
echo "    lb answered $ok of $total requests with 200 during the failover"
[ "$total" -gt 5 ] && [ "$ok" -eq "$total" ] || fail "lb did not answer throughout: $(sort "$tmp/probe" | uniq -c | tr '\n' ' ')"
docker start "$victim" >/dev/null
until_ok 90 "three voters again after $victim restarted" three_voters
echo "    $victim is back; three voters"

step "3b. PID 1 reaps orphans"
# The subshell exits at once, so its loop is handed to PID 1, notes its parent and exits; PID 1
# must wait() for it or it stays a zombie. The image has dash only: /proc is read with builtins.
docker run -d --name z1 template:dev sh -c '
  (sh -c "i=0; while [ \$i -lt 3000 ]; do i=\$((i+1)); done
          while read k v; do [ \"\$k\" = PPid: ] && echo \$v > /tmp/orphan-ppid; done < /proc/\$\$/status" &)
  exec nginx -c /etc/nginx/web.conf' >/dev/null
orphan_done() { docker exec z1 sh -c 'read p < /tmp/orphan-ppid && echo $p'; }
until_ok 20 "the orphan to run under PID 1" orphan_done
ppid=$(orphan_done)
states=$(docker exec z1 sh -c 'for f in /proc/[0-9]*/stat; do read l < $f; echo "${l#*) }"; done' | cut -c1 | sort | uniq -c | tr -s ' \n' ' ')
docker rm -f z1 >/dev/null
echo "    the orphan's parent was PID $ppid; process states left:$states"
[ "$ppid" = 1 ] || fail "the orphan's parent was $ppid, not PID 1"
case "$states" in *Z*) fail "a zombie in the container:$states" ;; esac

step "4b. the demo service's check fails on client1: upstream, nginx and lb follow"
bad_ip=$(container_ip client1)
docker stop -t 5 web1 >/dev/null
until_ok 30 "two passing web instances" web_is 2
until_ok 30 "two servers in the rendered upstream" upstream_has 2
upstream | grep -q "$bad_ip" && fail "upstream still has $bad_ip"
upstream | sed 's/^/    /'
answers "$NGINX/" >"$tmp/nginx"
grep -q "$bad_ip" "$tmp/nginx" && fail "nginx still sends to $bad_ip"
answers "$LB/" "Host: web.service.consul" >"$tmp/lb"
grep -q "$bad_ip" "$tmp/lb" && fail "lb still sends to $bad_ip"
[ "$(grep -c 'web at' "$tmp/lb")" -eq 2 ] || fail "lb answers: $(cat "$tmp/lb")"
sed 's/^/    nginx: /' "$tmp/nginx"
sed 's/^/    lb: /' "$tmp/lb"
docker start web1 >/dev/null
until_ok 30 "web1 passing again" web_is 3
until_ok 30 "three servers in the upstream again" upstream_has 3
echo "    web1 passes again; upstream has three servers"

step "5. a container with SERVICE_NAME=x joins the catalog and leaves it"
docker run -d --name x1 --network consul-demo -e SERVICE_NAME=x -e SERVICE_CHECK_HTTP=/health \
  -e SERVICE_CHECK_INTERVAL=1s --expose 8080 template:dev nginx -c /etc/nginx/web.conf >/dev/null
x_ip=$(container_ip x1)
x_passing() { curl -sf --max-time 5 "$LB/v1/health/service/x?passing" | json "assert [(s['Service']['Address'], s['Service']['Port']) for s in d] == [('$x_ip', 8080)]"; }
until_ok 30 "x at $x_ip:8080 passing" x_passing
echo "    x: $x_ip:8080, passing"
docker stop -t 5 x1 >/dev/null
x_gone() { curl -sf --max-time 5 "$LB/v1/catalog/service/x" | json 'assert d == []'; }
until_ok 30 "x to leave the catalog" x_gone
echo "    x left the catalog"

step "6. the seeds' docker run lines form a cluster"
docker run -d --name seed1 agent:dev agent -server -bind=0.0.0.0 -client=0.0.0.0 -bootstrap-expect=3 -node=seed1 -ui >/dev/null
seed1=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' seed1)
[ -n "$seed1" ] || fail "seed1 has no address on the default bridge"
docker run -d --name seed2 agent:dev agent -server -bind=0.0.0.0 -bootstrap-expect=3 -node=seed2 -join=$seed1 >/dev/null
# The official image's other way to say it: the address of an interface.
docker run -d --name seed3 -e CONSUL_BIND_INTERFACE=eth0 agent:dev agent -server -bootstrap-expect=3 -node=seed3 -join=$seed1 >/dev/null
seed_voters() { [ "$(docker exec seed1 agent operator raft list-peers | grep -c ' true ')" -eq 3 ] && docker exec seed1 agent operator raft list-peers | grep -q ' leader '; }
until_ok 60 "three voters among the seed containers" seed_voters
docker exec seed1 agent operator raft list-peers | sed 's/^/    /'
docker logs seed3 2>&1 | grep "^==> Found address" | sed 's/^/    seed3: /' | grep . || fail "seed3 did not take its address from CONSUL_BIND_INTERFACE"
docker rm -f seed1 seed2 seed3 >/dev/null

step "walk-through passed in $(($(date +%s) - started))s"
