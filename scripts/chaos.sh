#!/usr/bin/env bash
# The Jepsen-style test of the servers (issue 13): three servers on 127.0.135.1-3, each as its own
# group; clients doing default and ?consistent reads, writes and CAS on a few keys against random
# servers, session locks and unique-key writes, all recorded; a nemesis that kills (-9) and
# restarts, pauses (SIGSTOP/SIGCONT) and partitions servers (iptables, by socket owner and
# destination); then every server killed with -9 and restarted, everything read back, and the
# history checked: linearizability of each key as a CAS register (strict, and with default reads
# allowed the leader lease), stale default reads beyond the lease, acknowledged writes lost, locks
# held by two sessions, the longest stretch without a write while a quorum was up.
#
# usage: scripts/chaos.sh [SECONDS] [NEMESIS]
#   SECONDS  how long the clients and the nemesis run (150); with `failover`, the number of trials
#   NEMESIS  mixed (default: kills, pauses and partitions in turn), kill, pause, partition, none,
#            or failover: kill -9 the leader, time the first acknowledged write through the others
# env: RAFT_MULTIPLIER (1), SERVERS (3), CHAOS_PROFILE (release, or debug to reuse a debug build),
#      CHAOS_OUT (where histories are kept: target/chaos), CHAOS_KEEP=1 keeps data dirs and logs,
#      CHAOS_BUILD=0 uses the binaries already built.
# Exits non-zero when a check fails; the history and the servers' logs are kept then.
# Needs root (iptables, and running agents as other groups).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-150}; nemesis=${2:-mixed}
mult=${RAFT_MULTIPLIER:-1}; servers=${SERVERS:-3}; profile=${CHAOS_PROFILE:-release}
out=${CHAOS_OUT:-target/chaos}
scripts/setup.sh
if [ "${CHAOS_BUILD:-1}" = 1 ]; then
  if [ "$profile" = release ]; then cargo build --release -q -p agent -p e2e; else cargo build -q -p agent -p e2e; fi
fi
bin=target/$profile
mkdir -p "$out"
work=$(mktemp -d)
net=127.0.135; [ "$nemesis" = failover ] && net=127.0.136
chain=chaos-${net##*.}
status=1
cleanup() {
  if [ -f "$work/pids" ]; then
    while read -r p; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  fi
  while iptables -w -D OUTPUT -j "$chain" 2>/dev/null; do :; done
  iptables -w -F "$chain" 2>/dev/null || true; iptables -w -X "$chain" 2>/dev/null || true
  if [ "$status" = 0 ] && [ -z "${CHAOS_KEEP:-}" ]; then rm -rf "$work"; else echo "chaos: data dirs and logs kept in $work"; fi
}
trap cleanup EXIT
started=$(date +%s)
if [ "$nemesis" = failover ]; then
  "$bin/chaos" failover --agent "$bin/agent" --workdir "$work" --trials "$secs" --multiplier "$mult" --net "$net"
else
  history="$out/history-$nemesis-m$mult-$(date +%Y%m%d-%H%M%S).jsonl"
  "$bin/chaos" run --agent "$bin/agent" --workdir "$work" --secs "$secs" --nemesis "$nemesis" \
    --servers "$servers" --multiplier "$mult" --net "$net" --history "$history"
fi
status=0
echo "chaos: took $(( $(date +%s) - started )) s"
