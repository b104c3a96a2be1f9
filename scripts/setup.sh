#!/usr/bin/env bash
# Installs the system packages the build and the tests need, once, on a fresh Debian machine:
# cmake (pingora's build), nginx (template's end-to-end test, the proxy benchmark's peer),
# curl, python3-venv (the py-consul conformance suite), chromium (the web UI's browser tests),
# iptables (the partition tests and scripts/chaos.sh cut servers off with it).
# Safe to run again: it installs only what is missing.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v chromium >/dev/null || need+=(chromium)
command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
