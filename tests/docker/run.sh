#!/usr/bin/env bash
# The Docker part of the test suite (what scripts/test.sh runs): installs docker.io and
# docker-compose when missing, uses the dockerd that is running or starts one of its own (its own
# socket, data-root and exec-root under a temp dir; stopped and removed at the end), builds the
# images from the release binaries, and runs the compose walk-through.
# If no dockerd runs and none can be started here (no privileges, no cgroups), it says so with
# dockerd's own error and exits 0 (a skip), unless DOCKER_REQUIRED=1; anything after that point
# failing is a failure.
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
dockerd_pid=""
cleanup() {
  if [ -n "$own" ]; then
    echo "==> stopping the dockerd this run started"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
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
  dockerd_pid=$!
  export DOCKER_HOST=unix://$own/docker.sock
  # Up to 30 s, less if dockerd has exited already.
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    echo "docker: dockerd could not start on this machine; its log ends:" >&2
    tail -30 "$own/dockerd.log" | sed 's/^/    /' >&2
    if [ "${DOCKER_REQUIRED:-0}" = 1 ]; then
      echo "docker: FAILED (DOCKER_REQUIRED=1)" >&2
      exit 1
    fi
    echo "docker: SKIPPED the image build and the compose walk-through: no dockerd (set DOCKER_REQUIRED=1 to fail instead)" >&2
    exit 0
  fi
fi

# DOCKER_PROFILE=debug (scripts/test.sh): the debug binaries its workspace build made, as they
# are (building them again with other features would cost CI minutes); else a release build.
profile=${DOCKER_PROFILE:-release}
echo "==> building the images ($profile binaries)"
t0=$(date +%s)
if [ "$profile" = release ]; then
  cargo build --release -q -p agent -p template -p lb -p entrypoint
fi
t1=$(date +%s)
examples/docker/build --no-cargo --profile="$profile"
t2=$(date +%s)
echo "==> cargo build $((t1 - t0))s, images $((t2 - t1))s"
tests/docker/walkthrough.sh
