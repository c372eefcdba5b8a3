#!/usr/bin/env bash
# What the test suite needs besides the Python packages; `make test` runs this first.
#   - redis-server answering on 127.0.0.1:6379 (the Redis half of the contract suite);
#   - Debian's Chromium at /usr/bin/chromium (the browser and accessibility tests);
#   - Node and npm, and the locked Node packages of tests/peers (axe-core, prism).
# As root, what is missing is installed with apt-get; otherwise the script says what to
# install and stops. Idempotent: a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing_apt=()
need() {  # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 || missing_apt+=("$2")
}
need redis-server redis-server
need redis-cli redis-tools
need npm npm
[ -x /usr/bin/chromium ] || missing_apt+=(chromium)

if [ ${#missing_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "test-deps: installing ${missing_apt[*]}"
    # another process may hold the dpkg lock for a while: wait for it
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
      if apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null; then
        break
      fi
      [ "$attempt" -eq 10 ] && exit 1
      echo "test-deps: apt-get failed (lock held?), retrying"; sleep 15
    done
  else
    echo "test-deps: missing ${missing_apt[*]}; install them (Debian: sudo apt-get install ${missing_apt[*]})" >&2
    exit 1
  fi
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "test-deps: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 ping | grep -q PONG
fi

# The locked Node packages (package-lock.json), installed once.
if [ ! -f tests/peers/node_modules/.package-lock.json ] \
  || [ tests/peers/package-lock.json -nt tests/peers/node_modules/.package-lock.json ]; then
  echo "test-deps: npm ci in tests/peers"
  (cd tests/peers && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --loglevel=error)
fi
echo "test-deps: redis-server, chromium, node packages ready"
