"""Pinned cut points and digests, so that a dependency upgrade (fastcdc,
blake3) or a change of the cut loop that moves a cut point fails here.

The input is regenerated, never stored: ``golden_input(n)`` is the first ``n``
bytes of SHAKE-256 over ``b"replicator golden v1"`` (a standard, so any
Python or any language reproduces it), with bytes ``[n // 2, n // 2 + n // 5)``
set to zero so that max-size chunks are pinned too.

Regenerate the file only on purpose, when a change of cut points is
intended (it invalidates every replica store's dedup):
``.venv/bin/python tests/unit/test_native_golden.py``
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from replicator import _native as native
from replicator._native import ChunkerParams
from replicator.chunking import chunks_of, params_dict

GOLDEN = Path(__file__).parents[1] / "data" / "native" / "golden_v1.json"
CASES: list[tuple[str, ChunkerParams, int]] = [
    ("default", ChunkerParams(), 2 << 20),
    ("small-nc3-seed666", ChunkerParams(64, 256, 1024, normalization=3, seed=666), 64 << 10),
    ("nc0-odd-tail", ChunkerParams(4096, 16384, 65534, normalization=0), (512 << 10) + 1),
]


def golden_input(n: int) -> bytes:
    data = bytearray(hashlib.shake_256(b"replicator golden v1").digest(n))
    data[n // 2 : n // 2 + n // 5] = bytes(n // 5)
    return bytes(data)


def compute(params: ChunkerParams, size: int) -> dict[str, Any]:
    data = golden_input(size)
    cl = native.chunk_buffer(data, params)
    assert cl.digest is not None
    return {
        "params": params_dict(params),
        "size": size,
        "whole": cl.digest.hex(),
        "chunks": [[c.offset, c.length, c.hex] for c in chunks_of(cl)],
    }


def test_golden_cut_points_and_digests() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == sorted(name for name, _, _ in CASES)
    for name, params, size in CASES:
        want = golden[name]
        got = compute(params, size)
        assert got["params"] == want["params"], name
        assert got["whole"] == want["whole"], name
        assert len(got["chunks"]) == len(want["chunks"]), name
        for i, (g, w) in enumerate(zip(got["chunks"], want["chunks"], strict=True)):
            assert g == w, f"{name}: chunk {i} moved"


def test_golden_input_is_the_documented_generator() -> None:
    data = golden_input(1000)
    assert data[:500] == hashlib.shake_256(b"replicator golden v1").digest(1000)[:500]
    assert data[500:700] == bytes(200)


def main() -> None:
    doc = {name: compute(params, size) for name, params, size in CASES}
    GOLDEN.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
