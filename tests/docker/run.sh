#!/usr/bin/env bash
# The Docker part of the test suite (what scripts/test.sh runs): installs docker.io and
# docker-compose when missing, uses the dockerd that is running or starts one of its own (its own
# socket, data-root and exec-root under a temp dir; stopped and removed at the end), builds the
# images from the release binaries, and runs the compose walk-through.
# A dockerd that cannot start is a failure, never a skip.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

own=""
cleanup() {
  if [ -n "$own" ]; then
    echo "==> stopping the dockerd this run started"
    kill -TERM "$(cat "$own/dockerd.pid")" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$(cat "$own/dockerd.pid")" 2>/dev/null || break; sleep 0.5; done
    rm -rf "$own" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if docker info >/dev/null 2>&1; then
  echo "==> using the running dockerd (${DOCKER_HOST:-default socket})"
else
  # Short paths: containerd's sockets live under the exec-root.
  own=$(mktemp -d /tmp/dkr.XXXX)
  echo "==> starting dockerd (socket $own/docker.sock)"
  dockerd --host "unix://$own/docker.sock" --data-root "$own/data" --exec-root "$own/exec" \
    --pidfile "$own/dockerd.pid" >"$own/dockerd.log" 2>&1 &
  export DOCKER_HOST=unix://$own/docker.sock
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  if ! docker info >/dev/null 2>&1; then
    echo "docker: FAILED: dockerd did not start within 30s; its log:" >&2
    tail -30 "$own/dockerd.log" >&2
    exit 1
  fi
fi

echo "==> building the images (release binaries)"
t0=$(date +%s)
cargo build --release -q -p agent -p template -p lb -p entrypoint
t1=$(date +%s)
examples/docker/build --no-cargo
t2=$(date +%s)
echo "==> release build $((t1 - t0))s, images $((t2 - t1))s"
tests/docker/walkthrough.sh
