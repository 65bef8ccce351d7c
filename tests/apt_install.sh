#!/usr/bin/env bash
# apt-get install the named Debian packages (as root), waiting for another apt or dpkg that holds
# the package locks instead of failing at once, as apt-get does. The wait is bounded
# (APT_LOCK_WAIT_S, default 600 s); then the lock error is reported as apt-get printed it.
set -euo pipefail
deadline=$(( $(date +%s) + ${APT_LOCK_WAIT_S:-600} ))

apt_get() {
  local out
  while true; do
    if out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=30 "$@" 2>&1); then
      [ -z "$out" ] || printf '%s\n' "$out"
      return 0
    fi
    if grep -qE "Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock" <<<"$out" \
        && [ "$(date +%s)" -lt "$deadline" ]; then
      echo "apt_install: another apt/dpkg holds the package lock; waiting"
      sleep 5
      continue
    fi
    printf '%s\n' "$out" >&2
    return 1
  done
}

apt_get update -qq
apt_get install -y -qq "$@"
