#!/usr/bin/env bash
# Install label-studio==1.23.2 into its own venv, outside the repo, for the real-LS integration tests.
#
# Why a separate venv: LS pins Django and many libraries that would fight the backend's own pins.
# Why outside the repo: the install takes minutes; a machine that runs `make test` again reuses it.
# It also migrates an empty SQLite database once into "$LS_VENV/template-data": LS's ~200
# migrations take minutes on a loaded 2-core box, and every test session copies this fresh,
# user-less database instead of migrating again. A stamp file written last marks a complete
# install; an interrupted one is resumed (pip skips what is already there).
#
#   bash tests/integration/install_label_studio.sh         # idempotent; seconds when cached
#   LS_VENV=/somewhere bash tests/integration/install_label_studio.sh
set -euo pipefail

LS_VERSION="1.23.2"
LS_VENV="${LS_VENV:-$HOME/.cache/sam-backend/ls-venv-$LS_VERSION}"
STAMP="$LS_VENV/.installed-label-studio-$LS_VERSION"
TEMPLATE="$LS_VENV/template-data"
PYTHON="${LS_PYTHON:-python3}"

complete() { [ -f "$STAMP" ] && [ -f "$TEMPLATE/label_studio.sqlite3" ] && [ -x "$LS_VENV/bin/label-studio" ]; }
if complete; then
  echo "label-studio $LS_VERSION already installed in $LS_VENV"
  exit 0
fi

# Two `make test` runs at once on one machine must not pip-install into the same venv together.
mkdir -p "$(dirname "$LS_VENV")"
if command -v flock >/dev/null 2>&1; then  # util-linux; absent on macOS, where runs are not concurrent anyway
  exec 9>"$LS_VENV.lock"
  flock 9
fi
if complete; then
  echo "label-studio $LS_VERSION was installed in $LS_VENV by another run"
  exit 0
fi

echo "installing label-studio==$LS_VERSION into $LS_VENV (a few minutes, once per machine)"
started=$(date +%s)
[ -x "$LS_VENV/bin/python" ] || "$PYTHON" -m venv "$LS_VENV"

# pip's exit status matters, not the filter's: keep its output and show it only on failure
# (the index configuration here prints a warning per package that would drown everything).
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$LS_VENV/bin/python" -m pip install -q "label-studio==$LS_VERSION" >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" >&2 || true
  echo "label-studio install failed; $LS_VENV is left without its stamp (rerun to resume)" >&2
  exit 1
fi
installed="$("$LS_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))')"
if [ "$installed" != "$LS_VERSION" ]; then
  echo "expected label-studio $LS_VERSION in $LS_VENV, found $installed" >&2
  exit 1
fi

# `label-studio version` migrates the database of --data-dir and exits; no user is created.
echo "migrating a template database (LS runs its migrations once)"
rm -rf "$TEMPLATE" "$TEMPLATE.tmp"
mkdir -p "$TEMPLATE.tmp"
if ! (cd "$TEMPLATE.tmp" && LABEL_STUDIO_BASE_DATA_DIR="$TEMPLATE.tmp" LATEST_VERSION_CHECK=false \
      COLLECT_ANALYTICS=false "$LS_VENV/bin/label-studio" version --data-dir "$TEMPLATE.tmp" >"$log" 2>&1); then
  cat "$log" >&2
  echo "label-studio could not migrate its database in $TEMPLATE.tmp" >&2
  exit 1
fi
[ -f "$TEMPLATE.tmp/label_studio.sqlite3" ] || { cat "$log" >&2; echo "no database made in $TEMPLATE.tmp" >&2; exit 1; }
mv "$TEMPLATE.tmp" "$TEMPLATE"
touch "$STAMP"
echo "label-studio $LS_VERSION installed in $LS_VENV in $(( $(date +%s) - started )) s"
