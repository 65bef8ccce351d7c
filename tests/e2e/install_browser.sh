#!/usr/bin/env bash
# What the browser test (tests/e2e) needs: Debian's chromium and playwright-core from npm.
#
# playwright-core never downloads a browser (it drives /usr/bin/chromium), so nothing but the
# npm package comes from the network. As root, a missing chromium, Node.js or npm is installed
# with apt-get (waiting for another apt that holds the lock); otherwise the script names the
# packages and stops.
# Idempotent: seconds when everything is installed.
#
#   bash tests/e2e/install_browser.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing (apt-get)"
    bash "$HERE/../apt_install.sh" $missing
  else
    echo "the browser test needs$missing: install it (e.g. sudo apt-get install$missing) and run again" >&2
    exit 1
  fi
fi

# npm ci when the lock file changed since the last install (npm writes node_modules/.package-lock.json).
if [ ! -f "$HERE/node_modules/playwright-core/package.json" ] \
   || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
  (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
echo "browser test ready: $(chromium --version 2>/dev/null | head -1), playwright-core $(node -p "require('$HERE/node_modules/playwright-core/package.json').version")"
