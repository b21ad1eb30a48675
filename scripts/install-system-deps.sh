#!/usr/bin/env bash
# Installs the system packages the test suite needs beyond Python, from Debian:
# PgBouncer (the contract suite's transaction-mode pooler), HAProxy (the load balancer
# in front of several convmem serve processes) and docker-compose (its parser validates
# docker-compose.yml; no Docker engine is needed for that).
set -euo pipefail

missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "${missing[*]} missing and this user cannot install them: run 'apt-get install ${missing[*]}' as root" >&2
  exit 1
fi
echo "installing ${missing[*]} (Debian packages) ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package starts its own daemon on 6432; the tests start their own on a free port.
$SUDO service pgbouncer stop >/dev/null 2>&1 || true
$SUDO service haproxy stop >/dev/null 2>&1 || true
