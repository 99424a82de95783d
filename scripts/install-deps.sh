#!/usr/bin/env bash
# Installs what the test suite needs on a bare Debian machine: memcached.
set -euo pipefail
if command -v memcached >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
echo "installing memcached (apt-get)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq memcached >/dev/null
# The tests start their own memcached processes; the packaged service is not needed.
($SUDO systemctl disable --now memcached >/dev/null 2>&1 || $SUDO service memcached stop >/dev/null 2>&1) || true
command -v memcached >/dev/null
