#!/usr/bin/env bash
# Build SeaweedFS's `weed` (the real S3-compatible server of the integration
# tier) from the Go module proxy into ~/.cache/replicator/bin/weed.
#
# Idempotent and cached: when the binary exists and its embedded module
# version (`go version -m`) is the pinned one, nothing happens. The build
# goes through a tiny wrapper module because seaweedfs's go.mod pins
# github.com/tyler-smith/go-bip39, whose repository is gone from the proxy;
# the wrapper replaces it with the maintained cosmos fork. A build takes
# 10+ minutes on 2 cores (about 16 CPU-minutes: docs/testing.md); it runs under
# a lock so two callers never race.
set -euo pipefail

WEED_MODULE=github.com/seaweedfs/seaweedfs
WEED_VERSION=${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}   # SeaweedFS 4.53
CACHE=${REPLICATOR_CACHE:-$HOME/.cache/replicator}
BIN=$CACHE/bin/weed
WRAP=$CACHE/weedw
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
export GOFLAGS=-mod=mod

log() { printf '==> %s\n' "$*" >&2; }

built_version() {
  [ -x "$BIN" ] || return 1
  go version -m "$BIN" 2>/dev/null | awk -v m="$WEED_MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

command -v go >/dev/null || { echo "go toolchain not found (needed to build weed)" >&2; exit 2; }
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/weed-build.lock"
flock 9

if [ "$(built_version || true)" = "$WEED_VERSION" ]; then
  log "weed $WEED_VERSION already built: $BIN"
  exit 0
fi

log "building weed $WEED_VERSION (10+ minutes on 2 cores)"
rm -rf "$WRAP" && mkdir -p "$WRAP"
cd "$WRAP"
go mod init weedwrap >/dev/null 2>&1
go mod edit -replace github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0
began=$SECONDS
go get "$WEED_MODULE/weed@$WEED_VERSION"
log "modules downloaded in $((SECONDS - began)) s"
began=$SECONDS
# Build to a temporary name and rename, so an interrupted build never
# leaves a half-written binary that the version check would inspect.
# -s -w: no symbol table and DWARF (the test server is never debugged here);
# the link takes 12 s of CPU instead of 22 and the binary is 164 MB instead of
# 233 (docs/testing.md). Its build info, which the version check reads, stays.
go build -ldflags="-s -w" -o "$BIN.tmp" "$WEED_MODULE/weed"
mv -f "$BIN.tmp" "$BIN"
log "built $(built_version) at $BIN: compiled and linked in $((SECONDS - began)) s"
