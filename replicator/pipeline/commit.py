"""Manifests: built from durable chunk locations, stored put-if-absent.

A manifest is built only from :class:`Location` values, which exist only
once their pack and index are durable (``packs.resolve``), so the write
order packs -> index -> manifest holds by construction (invariant 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from replicator import failpoints
from replicator._native import ChunkerParams, blake3_digest
from replicator.chunking import DIGEST_SIZE
from replicator.store.backend import Backend
from replicator.store.format import ChunkRef, Manifest, PackRun, SourceIdentity
from replicator.store.index_cache import Location

EMPTY_DIGEST = blake3_digest(b"")


def runs_of(digests: bytes | bytearray, locations: Sequence[Location]) -> tuple[PackRun, ...]:
    """Group chunks stored back to back in one pack into runs (one GET each)."""
    runs: list[PackRun] = []
    pack, start, end = b"", 0, 0
    refs: list[ChunkRef] = []
    for i, loc in enumerate(locations):
        if refs and not (loc.pack == pack and loc.offset == end):
            runs.append(PackRun(pack, start, tuple(refs)))
            refs = []
        if not refs:
            pack, start, end = loc.pack, loc.offset, loc.offset
        d = bytes(digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
        refs.append(ChunkRef(d, loc.length, loc.stored_length, loc.compression))
        end += loc.stored_length
    if refs:
        runs.append(PackRun(pack, start, tuple(refs)))
    return tuple(runs)


def object_manifest(
    identity: SourceIdentity,
    digest: bytes,
    params: ChunkerParams,
    digests: bytes | bytearray,
    locations: Sequence[Location],
) -> Manifest:
    return Manifest(identity, False, digest, params, runs_of(digests, locations))


def tombstone(identity: SourceIdentity, params: ChunkerParams) -> Manifest:
    return Manifest(identity, True, EMPTY_DIGEST, params, ())


async def put_manifest(backend: Backend, manifest: Manifest) -> bool:
    """Store the manifest unless that version's manifest exists: True if written.

    Its name pins the whole identity, so an existing one has equal content
    (a replay); put_if_absent keeps concurrent writers from replacing it."""
    data = manifest.to_bytes()
    failpoints.hit(failpoints.BEFORE_MANIFEST_PUT)
    written = await backend.put_if_absent(
        manifest.store_key(), data, sha256=hashlib.sha256(data).digest()
    )
    failpoints.hit(failpoints.AFTER_MANIFEST_PUT)
    return written
