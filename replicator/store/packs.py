"""Pack writer: new chunks of one peer, batched into write-once packs.

Vocabulary: a *placement* says where one chunk of an object lives (or will
live) at a peer: in a pack that is already durable (its name), or in the
*open pack* still being filled (an :class:`OpenPack`, whose name -- the
BLAKE3 of its bytes -- exists only once it is sealed).

Sealing writes the pack, then its index, then records it in the index cache,
and only then resolves the open pack's future: a manifest waits on that
future, so it is written after every pack and index it names (invariant 1).
At most one open pack per peer is held in memory; the lock that guards it
also makes "is this chunk new?" and "add it" one step, so two objects
sharing a new chunk store it once.

Chunks are stored raw, or zstd-compressed one by one with
``store.compression = "zstd"`` (kept raw when that does not shrink them);
the index and manifests record each chunk's stored form.

A chunk copy that verify or restore found damaged (``quarantine/``) is never
a deduplication target: the chunk ships again, or, once ``repair`` has
relocated it, the good copy is used (``store/quarantine.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Protocol

from replicator import failpoints
from replicator._native import Blake3Hasher, blake3_digest
from replicator.errors import ConfigError
from replicator.store.backend import Backend
from replicator.store.format import PACKS, IndexEntry, PackIndex, index_key, pack_key
from replicator.store.index_cache import IndexCache, Location
from replicator.store.placed import Placed
from replicator.store.quarantine import DamageMap
from replicator.store.sealing import SealBudget, pack_names, resolve
from replicator.store.spool import Spool, append, open_spool, put_spool, settle

#: How often a writer re-reads the peer's quarantine (two LISTs).
DAMAGE_REFRESH_SECONDS = 300.0
__all__ = [
    "ChunkBatch",
    "OpenPack",
    "PackWriter",
    "Placement",
    "SealBudget",
    "WriterStats",
    "pack_names",
    "resolve",
    "settle",
]

#: Packs sealed at once when they are spooled to the peer (no memory held).
SPOOLED_IN_FLIGHT = 2
#: A chunk as stored: its bytes (a view of the window, or compressed bytes).
Stored = bytes | memoryview


class ChunkBatch(Protocol):
    """Chunks of one window of an object; ``data`` is only asked for new ones."""

    def __len__(self) -> int: ...
    def digest(self, i: int) -> bytes: ...
    def length(self, i: int) -> int: ...
    def data(self, i: int) -> memoryview: ...


@dataclass(eq=False)
class OpenPack:
    """A pack being filled; ``name`` resolves once pack and index are durable."""

    buf: bytearray = field(default_factory=bytearray)
    entries: dict[bytes, IndexEntry] = field(default_factory=dict)
    name: asyncio.Future[bytes] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    size: int = 0
    #: Where the bytes go instead of ``buf`` when the peer spools
    #: (store/spool.py), the BLAKE3 of those written so far, and the chunks
    #: placed since the last write to it (views of the current window).
    spool: Spool | None = None
    hasher: Blake3Hasher = field(default_factory=Blake3Hasher)
    pending: list[Stored] = field(default_factory=list)
    #: The last append to the spool (each waits for the one before).
    written: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    pack: bytes | OpenPack
    offset: int
    length: int
    stored_length: int
    compression: str = "none"
    new: bool = False  # shipped by this placement (not deduplicated)


@dataclass
class WriterStats:
    shipped_bytes: int = 0  # chunk bytes added to packs (uncompressed)
    stored_bytes: int = 0  # what they take in the packs (after compression)
    deduplicated_bytes: int = 0  # chunk bytes found already stored
    packs: int = 0
    packs_missing: int = 0  # cache hints whose pack was gone at the peer


class PackWriter:
    """Accumulates one peer's new chunks into packs of about ``pack_size``."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        cache: IndexCache,
        pack_size: int,
        compression: str = "none",
        *,
        damage: DamageMap | None = None,
    ) -> None:
        if compression not in ("none", "zstd"):
            raise ConfigError(f"store.compression = {compression!r} is not supported")
        self.compression = compression
        self._zstd = _Zstd() if compression == "zstd" else None
        self.name = name
        self.backend = backend
        self.cache = cache
        self.pack_size = pack_size
        self.stats = WriterStats()
        self._lock = asyncio.Lock()
        #: Packs go to a spool at the peer while they fill, while it offers one.
        self._spooling = True
        #: Spool appends started by the current ``place_into``.
        self._drains: list[asyncio.Future[None]] = []
        self._open = OpenPack()
        #: Chunks of packs being written in the background, by digest: a
        #: repeat refers to that pack instead of shipping the chunk again.
        self._sealing: dict[bytes, tuple[OpenPack, IndexEntry]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        #: One pack is written while the next one fills: enough to overlap
        #: the peer's write latency with reading and chunking, and it bounds
        #: memory to two packs per peer.
        self._write_slot = asyncio.Semaphore(1)
        #: Spooled packs hold no memory: two are sealed at once, so one
        #: pack's data sync overlaps the other's index and directory syncs.
        self._spool_slot = asyncio.Semaphore(SPOOLED_IN_FLIGHT)
        #: Packs seen present at the peer in this run (HEAD once, then trusted).
        self._present: set[bytes] = set()
        #: The peer's damaged copies: given (repair), or read from the peer
        #: and read again every DAMAGE_REFRESH_SECONDS, so a long-running
        #: daemon sees what a later verify quarantined.
        self._damage = damage
        self._damage_fixed = damage is not None
        self._damage_read = 0.0

    async def place(self, batch: ChunkBatch) -> list[Placement]:
        """Where each chunk of ``batch`` lives at this peer, shipping new ones."""
        placed = Placed()
        await settle(await self.place_into(batch, placed))
        return list(placed.placements())

    async def place_into(self, batch: ChunkBatch, placed: Placed) -> list[asyncio.Future[None]]:
        """``place``, appending to an object's compact ``placed`` (no object
        per chunk: what a backfill keeps until the manifest is written).

        Returns the spool writes still reading the batch's memory: the
        caller must not reuse it before they are done (``settle``)."""
        async with self._lock:
            self._drains = []
            known = await self._known(batch)
            stored = await self._encode(batch, known)
            # Placements made in this batch: a repeat stays deduplicated even if
            # the open pack was sealed between its two occurrences.
            seen: dict[bytes, int] = {}
            for i in range(len(batch)):
                d, n = batch.digest(i), batch.length(i)
                if (j := seen.get(d)) is not None:
                    placed.repeat(j)
                elif (hit := self._open.entries.get(d)) is not None:
                    placed.add(
                        self._open, hit.offset, n, hit.stored_length, hit.compression, new=False
                    )
                elif (sealing := self._sealing.get(d)) is not None:
                    e = sealing[1]
                    placed.add(sealing[0], e.offset, n, e.stored_length, e.compression, new=False)
                elif (loc := known.get(d)) is not None:
                    placed.add(
                        loc.pack, loc.offset, n, loc.stored_length, loc.compression, new=False
                    )
                else:
                    seen[d] = len(placed)
                    pack, e = await self._add(d, n, *stored[i])
                    placed.add(pack, e.offset, n, e.stored_length, e.compression, new=True)
                    continue
                self.stats.deduplicated_bytes += n
            self._drain(self._open)
            return self._drains

    async def _encode(
        self, batch: ChunkBatch, known: dict[bytes, Location]
    ) -> dict[int, tuple[Stored, str]]:
        """Stored form of each chunk that may be new; bytes are read for those only."""
        fresh: dict[bytes, int] = {}
        for i in range(len(batch)):
            d = batch.digest(i)
            if (
                d not in known
                and d not in self._open.entries
                and d not in self._sealing
                and d not in fresh
            ):
                fresh[d] = i
        views = {i: batch.data(i) for i in fresh.values()}
        if self._zstd is None:
            return {i: (v, "none") for i, v in views.items()}
        # One thread hop per batch: compressing a window's chunks takes ms.
        coded = await asyncio.to_thread(self._zstd.encode, list(views.values()))
        return dict(zip(views, coded, strict=True))

    async def _known(self, batch: ChunkBatch) -> dict[bytes, Location]:
        """Cache hits whose pack is confirmed present at the peer in this run."""
        wanted = [batch.digest(i) for i in range(len(batch))]
        hits = await self.cache.lookup([d for d in wanted if d not in self._open.entries])
        hits = await self._healthy(hits)
        unchecked = {loc.pack for loc in hits.values()} - self._present
        if unchecked:
            infos = await asyncio.gather(*(self.backend.head(pack_key(p)) for p in unchecked))
            for pack, info in zip(unchecked, infos, strict=True):
                if info is None:
                    # The hint is stale (pack pruned or lost): ship its chunks again.
                    self.stats.packs_missing += 1
                    await self.cache.forget_pack(pack)
                else:
                    self._present.add(pack)
        return {d: loc for d, loc in hits.items() if loc.pack in self._present}

    async def _healthy(self, hits: dict[bytes, Location]) -> dict[bytes, Location]:
        """Cache hits with every damaged copy replaced by its relocated good
        copy, or left out (so the chunk ships again) when it has none."""
        damage = await self._current_damage()
        if not damage:
            return hits
        out: dict[bytes, Location] = {}
        for d, loc in hits.items():
            if not damage.is_bad(loc.pack, d):
                out[d] = loc
            elif (good := damage.resolve(loc.pack, d)) is not None and not damage.is_bad(
                good.pack, d
            ):
                out[d] = good
        return out

    async def _current_damage(self) -> DamageMap:
        now = time.monotonic()
        stale = not self._damage_fixed and now - self._damage_read > DAMAGE_REFRESH_SECONDS
        if self._damage is None or stale:
            self._damage, self._damage_read = await DamageMap.load(self.backend), now
        return self._damage

    async def _add(
        self, digest: bytes, length: int, data: Stored, compression: str
    ) -> tuple[OpenPack, IndexEntry]:
        pack = self._open
        if self._spooling and pack.spool is None:
            pack.spool = await open_spool(self.backend, PACKS.rstrip("/"))
            self._spooling = pack.spool is not None
        stored = memoryview(data).nbytes
        entry = IndexEntry(digest, pack.size, length, stored, compression)
        if pack.spool is not None:
            pack.pending.append(data)  # written by _drain, in one thread hop
        else:
            pack.buf += data
        pack.size += stored
        pack.entries[digest] = entry
        self.stats.shipped_bytes += length
        self.stats.stored_bytes += stored
        if pack.size >= self.pack_size:
            await self._seal()
        return pack, entry

    def _drain(self, pack: OpenPack) -> None:
        """Start appending the pack's pending chunks to its spool, after the
        appends started before, hashing them on the way (the pack's name is
        the BLAKE3 of its bytes). It runs in a thread while the caller goes
        on (the next window is chunked meanwhile); the caller's window must
        not be refilled before the task is done (``place_into`` returns it)."""
        if pack.spool is None or not pack.pending:
            return
        pieces, pack.pending = pack.pending, []
        task = asyncio.ensure_future(append(pack.spool, pack.hasher, pieces, pack.written))
        pack.written = task
        self._drains.append(task)

    async def flush(self) -> None:
        """Seal the open pack now (end of a run, or manifests are waiting) and
        wait until every pack of this writer is durable or has failed (a
        failure reaches the manifests waiting on that pack, not the caller)."""
        async with self._lock:
            if self._open.entries:
                await self._seal()
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def _seal(self) -> None:
        """Start writing the open pack in the background (called under the lock).

        Waiting for the write slot here is the backpressure: with one pack
        already being written, the object pipeline stops until it is done."""
        pack, self._open = self._open, OpenPack()
        self._drain(pack)
        slot = self._write_slot if pack.spool is None else self._spool_slot
        await slot.acquire()
        for digest, entry in pack.entries.items():
            self._sealing[digest] = (pack, entry)
        task = asyncio.create_task(self._seal_in_background(pack, list(pack.entries), slot))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _seal_in_background(
        self, pack: OpenPack, digests: list[bytes], slot: asyncio.Semaphore
    ) -> None:
        try:
            name = await self._write(pack)
        except asyncio.CancelledError:
            pack.name.cancel()
            raise
        except Exception as exc:  # handed to every manifest waiting on this pack
            pack.name.set_exception(exc)
            pack.name.exception()  # retrieved here; waiters re-raise it themselves
        else:
            pack.name.set_result(name)
        finally:
            for d in digests:
                if self._sealing.get(d, (None,))[0] is pack:
                    del self._sealing[d]
            slot.release()

    async def _write(self, pack: OpenPack) -> bytes:
        # Order matters: pack, then index, then the cache hint; each durable
        # before the next, so no index or hint ever names a missing pack.
        entries, pack.entries = tuple(pack.entries.values()), {}
        if pack.spool is not None:
            try:
                await settle([pack.written] if pack.written else [])
                name = pack.hasher.digest()
                await put_spool(self.backend, pack_key(name), pack.spool)
            except BaseException:
                await asyncio.to_thread(pack.spool.discard)  # waits for a write in flight
                raise
        else:
            name = await self._put_buffer(pack)
        failpoints.hit(failpoints.AFTER_PACK_PUT)
        index = PackIndex(name, pack.size, entries)
        ibytes = index.to_bytes()
        failpoints.hit(failpoints.BEFORE_INDEX_PUT)
        await self.backend.put(index_key(name), ibytes, sha256=hashlib.sha256(ibytes).digest())
        await self.cache.record(index)
        self._present.add(name)
        self.stats.packs += 1
        return name

    async def _put_buffer(self, pack: OpenPack) -> bytes:
        # The buffer is handed over as it is (no copy: it would double the
        # writer's memory); nothing appends to it any more, since the open
        # pack was replaced before sealing began, under the writer's lock.
        data = pack.buf
        try:
            # Hashing tens of MiB takes tens of ms: not on the event loop. No
            # SHA-256 here: the backend computes the checksum its server
            # verifies (S3); one over the same memory would prove nothing more.
            name = await asyncio.to_thread(blake3_digest, data)
            await self.backend.put(pack_key(name), data)
        finally:
            # Waiting manifests keep this OpenPack alive until they are
            # written: drop its bytes now, so they cost nothing meanwhile.
            pack.buf = bytearray()
        return name


class _Zstd:
    """Per-chunk zstd; a chunk that does not shrink is stored as it is."""

    def __init__(self) -> None:
        try:
            import zstandard  # noqa: PLC0415 - optional, only for stores that compress
        except ImportError as exc:
            raise ConfigError("store.compression = 'zstd' needs the 'zstandard' package") from exc
        # One compressor per writer, used under the writer's lock only.
        self._compressor = zstandard.ZstdCompressor(level=3)

    def encode(self, chunks: list[memoryview]) -> list[tuple[Stored, str]]:
        out: list[tuple[Stored, str]] = []
        for c in chunks:
            z = self._compressor.compress(c)
            out.append((z, "zstd") if len(z) < c.nbytes else (c, "none"))
        return out
