#!/usr/bin/env bash
# Fetches the official BLAKE3 test vectors for tests/unit/test_native.py.
#
# They ship in the PyPI sdist of the `blake3` package (tests/test_vectors.json);
# third-party data is not committed here, so this downloads the sdist with pip
# once and keeps only the JSON in the cache. Idempotent: a present file is kept.
#
#   tests/services/fetch_vectors.sh            -> prints the path of the file
#   REPLICATOR_VECTORS_DIR=DIR overrides ~/.cache/replicator/vectors
set -euo pipefail
VERSION=1.0.11
DIR=${REPLICATOR_VECTORS_DIR:-$HOME/.cache/replicator/vectors}
OUT="$DIR/blake3_test_vectors.json"
if [ -s "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
mkdir -p "$DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download -q --no-deps --no-binary blake3 "blake3==$VERSION" -d "$TMP" >&2
tar -xzf "$TMP/blake3-$VERSION.tar.gz" -C "$TMP" "blake3-$VERSION/tests/test_vectors.json"
# Check it parses before publishing it, then move it in atomically.
"$PY" -c 'import json, sys; assert json.load(open(sys.argv[1]))["cases"]' \
  "$TMP/blake3-$VERSION/tests/test_vectors.json"
mv "$TMP/blake3-$VERSION/tests/test_vectors.json" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
