#!/usr/bin/env bash
# Installs the system packages the test suite needs beyond Python: PgBouncer
# (Debian's package), used by the contract suite's transaction-mode pooler set-up.
set -euo pipefail

if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "pgbouncer is missing and this user cannot install it: run 'apt-get install pgbouncer' as root" >&2
  exit 1
fi
echo "installing pgbouncer (Debian package) ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
# The package starts its own daemon on 6432; the tests start their own on a free port.
$SUDO service pgbouncer stop >/dev/null 2>&1 || true
