"""Pack files: how a sealed pack becomes durable at a peer, and how a chunk
is stored in one.

A pack is named by the BLAKE3 of its bytes. A sealed pack is written
(:func:`put_pack`), then its index, then it is recorded in the local index
cache (:func:`put_index`), each durable before the next, so no index or
cache hint ever names a missing pack (the write order of
docs/store-format.md). Which chunks go into a pack, and when
it is sealed, is the pipeline's business (``pipeline/plan.py``).

Chunks are stored raw, or zstd-compressed one by one with
``store.compression = "zstd"`` (kept raw when that does not shrink them);
the index and manifests record each chunk's stored form.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from replicator import failpoints
from replicator._native import blake3_digest
from replicator.errors import ConfigError
from replicator.store.backend import Backend
from replicator.store.format import IndexEntry, PackIndex, index_key, pack_key
from replicator.store.index_cache import IndexCache

#: A chunk as stored: its bytes (a view of the window, or compressed bytes).
Stored = bytes | memoryview


async def put_pack(backend: Backend, data: bytearray) -> bytes:
    """Write a sealed pack's bytes (before its index); its name.

    ``data`` is handed to the backend as it is (no copy: it would double the
    writer's memory), so nothing may append to it any more."""
    # Hashing tens of MiB takes tens of ms: not on the event loop. No
    # SHA-256 here: the backend computes the checksum its server verifies
    # (S3); one over the same memory would prove nothing more.
    name = await asyncio.to_thread(blake3_digest, data)
    await backend.put(pack_key(name), data)
    failpoints.hit(failpoints.AFTER_PACK_PUT)
    return name


async def put_index(
    backend: Backend, cache: IndexCache, name: bytes, size: int, entries: Sequence[IndexEntry]
) -> None:
    """Write the index of the durable pack ``name``, then record it in the cache."""
    index = PackIndex(name, size, tuple(entries))
    ibytes = index.to_bytes()
    failpoints.hit(failpoints.BEFORE_INDEX_PUT)
    await backend.put(index_key(name), ibytes, sha256=hashlib.sha256(ibytes).digest())
    await cache.record(index)


class ChunkCoder:
    """Per-chunk zstd; a chunk that does not shrink is stored as it is."""

    def __init__(self) -> None:
        try:
            import zstandard  # noqa: PLC0415 - optional, only for stores that compress
        except ImportError as exc:
            raise ConfigError("store.compression = 'zstd' needs the 'zstandard' package") from exc
        # One compressor per coder; a coder is used by one writer, under its lock.
        self._compressor = zstandard.ZstdCompressor(level=3)

    def encode(self, chunks: list[memoryview]) -> list[tuple[Stored, str]]:
        out: list[tuple[Stored, str]] = []
        for c in chunks:
            z = self._compressor.compress(c)
            out.append((z, "zstd") if len(z) < c.nbytes else (c, "none"))
        return out
