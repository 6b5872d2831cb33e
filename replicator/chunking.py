"""Python-side view of the native chunker: typed chunk records and helpers.

Vocabulary: a *chunk* is a content-defined byte range of an object; its
*digest* is the BLAKE3 of its bytes (32 bytes, shown as 64 hex characters).
The native module returns chunks as packed arrays; this module turns them
into records only where Python code needs to look at them one by one.
"""

from __future__ import annotations

from typing import Any

from replicator._native import ChunkerParams, ChunkList
from replicator.records import record

DIGEST_SIZE = 32


@record(frozen=True, slots=True)
class Chunk:
    offset: int
    length: int
    digest: bytes

    @property
    def hex(self) -> str:
        return self.digest.hex()


def chunks_of(cl: ChunkList) -> list[Chunk]:
    """One record per chunk (use the packed arrays on hot paths)."""
    offsets = memoryview(cl.offsets).cast("Q")
    lengths = memoryview(cl.lengths).cast("I")
    digests = cl.digests
    return [
        Chunk(offsets[i], lengths[i], digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
        for i in range(len(cl))
    ]


def params_dict(p: ChunkerParams) -> dict[str, Any]:
    """The parameters as a JSON-ready mapping (the store's pinned form)."""
    return {
        "algorithm": "fastcdc-2020",
        "min_size": p.min_size,
        "avg_size": p.avg_size,
        "max_size": p.max_size,
        "normalization": p.normalization,
        "seed": p.seed,
    }
