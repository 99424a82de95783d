#!/usr/bin/env bash
# Installs what the test suite needs on a bare Debian machine: memcached (the
# integration tests start their own processes) and Node.js with npm (the
# official openai npm package's tests). Does nothing when they are there.
set -euo pipefail
need=()
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
echo "installing ${need[*]} (apt-get)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
# The tests start their own memcached processes; the packaged service is not needed.
($SUDO systemctl disable --now memcached >/dev/null 2>&1 || $SUDO service memcached stop >/dev/null 2>&1) || true
command -v memcached >/dev/null && command -v node >/dev/null && command -v npm >/dev/null
