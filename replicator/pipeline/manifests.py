"""Manifests: built from durable chunk locations, stored put-if-absent.

A manifest is built only from :class:`Location` values, which exist only
once their pack and index are durable (``durable.resolve``), so the write
order packs -> index -> manifest holds by construction (invariant 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from replicator import failpoints
from replicator._native import ChunkerParams, blake3_digest
from replicator.chunking import DIGEST_SIZE
from replicator.store.backend import Backend
from replicator.store.format import ChunkRef, Manifest, PackRun, SourceIdentity
from replicator.store.index_cache import Location
from replicator.store.manifest_store import ManifestStore, manifests_of
from replicator.store.placed import Placed

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


def placed_runs(
    digests: bytes | bytearray, placed: Placed, names: Sequence[bytes]
) -> tuple[PackRun, ...]:
    """``runs_of`` straight from compact placements (``names``: their packs'
    durable names, as ``pack_names`` gives them): no record per chunk on the way."""
    runs: list[PackRun] = []
    pack, start, end = b"", 0, 0
    refs: list[ChunkRef] = []
    view = memoryview(digests)
    ix, offsets, lengths, stored, zstd = (
        placed.pack_ix,
        placed.offsets,
        placed.lengths,
        placed.stored,
        placed.compressed,
    )
    for i in range(len(placed)):
        p, off = names[ix[i]], offsets[i]
        if refs and not (p == pack and off == end):
            runs.append(PackRun(pack, start, tuple(refs)))
            refs = []
        if not refs:
            pack, start, end = p, off, off
        n, s = lengths[i], stored[i]
        d = view[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE].tobytes()
        refs.append(ChunkRef(d, n, s, "zstd") if zstd[i] else ChunkRef(d, n, n))
        end += s
    if refs:
        runs.append(PackRun(pack, start, tuple(refs)))
    return tuple(runs)


def placed_manifest(
    identity: SourceIdentity,
    digest: bytes,
    params: ChunkerParams,
    digests: bytes | bytearray,
    *,
    placed: Placed,
    names: Sequence[bytes],
) -> Manifest:
    return Manifest(identity, False, digest, params, placed_runs(digests, placed, names))


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


async def put_manifest(store: Backend | ManifestStore, manifest: Manifest) -> bool:
    """Store the manifest unless that version's manifest exists: True if written.

    Its name pins the whole identity, so an existing one has equal content
    (a replay); put-if-absent keeps concurrent writers from replacing it."""
    failpoints.hit(failpoints.BEFORE_MANIFEST_PUT)
    (written,) = await manifests_of(store).put_many([manifest])
    if isinstance(written, BaseException):
        raise written
    failpoints.hit(failpoints.AFTER_MANIFEST_PUT)
    return written


class ManifestCommits:
    """Group commit of the manifests going to one peer.

    Manifests handed in while a batch is being written go together in the
    next one (one ``ManifestStore.put_many``): a filesystem peer makes a
    whole batch durable with a couple of syncs in one thread hop, an S3 peer
    gets the batch's PUTs in flight at once. Each caller is answered
    (written, present, or its own error) only once its manifest is durable.
    ``store`` is the peer's ManifestStore, or a Backend of an opened peer."""

    def __init__(self, store: Backend | ManifestStore, limit: int = 512) -> None:
        self.store = manifests_of(store)
        self.backend = self.store.backend
        self.limit = limit
        self._pending: list[tuple[Manifest, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def put(self, manifest: Manifest) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((manifest, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        return await done

    async def put_many(self, manifests: Sequence[Manifest]) -> list[bool | BaseException]:
        """``put`` of each manifest, answered together: written, present, or
        that manifest's own error (a batch of small objects: no task each)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = [loop.create_future() for _ in manifests]
        self._pending.extend(zip(manifests, futures, strict=True))
        if self._writer is None and futures:
            self._writer = asyncio.create_task(self._drain())
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let the manifests released together join
            while self._pending:
                batch, self._pending = self._pending[: self.limit], self._pending[self.limit :]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Manifest, asyncio.Future[bool]]]) -> None:
        answers: list[bool | BaseException]
        try:
            failpoints.hit(failpoints.BEFORE_MANIFEST_PUT)
            answers = await self.store.put_many([m for m, _ in batch])
            failpoints.hit(failpoints.AFTER_MANIFEST_PUT)
        except Exception as exc:  # the whole batch failed (a sync, the peer)
            answers = [exc] * len(batch)
        for (_, done), answer in zip(batch, answers, strict=True):
            if done.done():
                continue  # its caller was cancelled
            if isinstance(answer, BaseException):
                done.set_exception(answer)
            else:
                done.set_result(answer)
