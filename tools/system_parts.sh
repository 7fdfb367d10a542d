#!/usr/bin/env bash
# Under CI=true the tests that need PostgreSQL's server must run, never skip: install it
# from Debian's packages when its programs are missing (the tests start their own
# throwaway clusters as the `postgres` user the package creates).
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: PostgreSQL's server is needed: apt-get install postgresql" >&2
  exit 1
fi
echo "installing PostgreSQL from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
