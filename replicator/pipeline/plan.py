"""Planning a peer's new chunks: the pack writer of the pipeline.

Vocabulary: a *placement* says where one chunk of an object lives (or will
live) at a peer: in a pack that is already durable (its name), or in the
*open pack* still being filled (an :class:`OpenPack`, whose name -- the
BLAKE3 of its bytes -- exists only once it is sealed).

The writer decides, per chunk, whether the peer already holds it (the index
cache, confirmed present, quarantine honoured) or it is new. New chunks go
into the open pack, which is sealed on size here (on time and on the seal
budget by ``pipeline/durable.py``) and written in the
background (``store/packfile.py``: pack, then index, then cache hint). Only
then is the open pack's future resolved: the *chunks durable* signal a
manifest waits for, so it is written after every pack and index it names
(invariant 1). At most one open pack per peer is held in memory; the lock
that guards it also makes "is this chunk new?" and "add it" one step, so
two objects sharing a new chunk store it once.

A chunk copy that verify or restore found damaged (``quarantine/``) is never
a deduplication target: the chunk ships again, or, once ``repair`` has
relocated it, the good copy is used (``store/quarantine.py``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import field
from typing import Protocol

from replicator import failpoints
from replicator._native import Blake3Hasher
from replicator.errors import ConfigError
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.format import PACKS, IndexEntry, pack_key
from replicator.store.index_cache import IndexCache, Location
from replicator.store.packfile import ChunkCoder, Stored, put_index, put_pack
from replicator.store.placed import Placed
from replicator.store.quarantine import DamageMap
from replicator.store.spool import Spool, append, open_spool, put_spool, settle

#: How often a writer re-reads the peer's quarantine (two LISTs).
DAMAGE_REFRESH_SECONDS = 300.0

#: Packs sealed at once when they are spooled to the peer (no memory held).
SPOOLED_IN_FLIGHT = 2


class ChunkBatch(Protocol):
    """Chunks of one window of an object; ``data`` is only asked for new ones."""

    def __len__(self) -> int: ...
    def digest(self, i: int) -> bytes: ...
    def length(self, i: int) -> int: ...
    def data(self, i: int) -> memoryview: ...


@record(eq=False)
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


@record(frozen=True, slots=True)
class Placement:
    pack: bytes | OpenPack
    offset: int
    length: int
    stored_length: int
    compression: str = "none"
    new: bool = False  # shipped by this placement (not deduplicated)


@record
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
        self._zstd = ChunkCoder() if compression == "zstd" else None
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
        #: How long the last pack took to be written (pack and index).
        self.last_write_seconds = 0.0
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
            try:
                await self._place_all(batch, placed)
            except BaseException:
                # Appends started before the failure still read the batch:
                # the caller may reuse its memory once they are done.
                await asyncio.gather(*self._drains, return_exceptions=True)
                raise
            return self._drains

    async def _place_all(self, batch: ChunkBatch, placed: Placed) -> None:
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
                placed.add(self._open, hit.offset, n, hit.stored_length, hit.compression, new=False)
            elif (sealing := self._sealing.get(d)) is not None:
                e = sealing[1]
                placed.add(sealing[0], e.offset, n, e.stored_length, e.compression, new=False)
            elif (loc := known.get(d)) is not None:
                placed.add(loc.pack, loc.offset, n, loc.stored_length, loc.compression, new=False)
            else:
                seen[d] = len(placed)
                pack, e = await self._add(d, n, *stored[i])
                placed.add(pack, e.offset, n, e.stored_length, e.compression, new=True)
                continue
            self.stats.deduplicated_bytes += n
        self._drain(self._open)

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

    def would_wait(self, nbytes: int, slower_than: float = -1.0) -> bool:
        """Whether placing up to ``nbytes`` of new chunks now may wait for the
        upload of an earlier pack (the open pack would seal, or is sealing,
        while the one before is still being written), at a peer whose last
        pack took more than ``slower_than`` seconds to write. A caller serving
        several peers can leave this one out instead of waiting (ship.py)."""
        slot = self._spool_slot if self._spooling else self._write_slot
        if not slot.locked() or self.last_write_seconds <= slower_than:
            return False
        return self._lock.locked() or self._open.size + nbytes >= self.pack_size

    def is_open(self, pack: OpenPack) -> bool:
        """Whether ``pack`` is this writer's open pack (not sealed yet)."""
        return self._open is pack

    async def seal_if_open(self, pack: OpenPack) -> None:
        """Seal ``pack`` if it is still the open pack (a waiting manifest's
        deadline passed); one already sealed on size is left alone. Does not
        wait for the write: its waiters wait on the pack's future."""
        async with self._lock:
            if self._open is pack and pack.entries:
                await self._seal()

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
        started = time.monotonic()
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
            self.last_write_seconds = time.monotonic() - started
            for d in digests:
                if self._sealing.get(d, (None,))[0] is pack:
                    del self._sealing[d]
            slot.release()

    async def _write(self, pack: OpenPack) -> bytes:
        # Order matters: pack, then index, then the cache hint (packfile.py),
        # each durable before the next, so no index or hint names a missing pack.
        entries, pack.entries = tuple(pack.entries.values()), {}
        if pack.spool is not None:
            try:
                await settle([pack.written] if pack.written else [])
                name = pack.hasher.digest()
                await put_spool(self.backend, pack_key(name), pack.spool)
            except BaseException:
                await asyncio.to_thread(pack.spool.discard)  # waits for a write in flight
                raise
            failpoints.hit(failpoints.AFTER_PACK_PUT)
        else:
            name = await self._put_buffer(pack)
        await put_index(self.backend, self.cache, name, pack.size, entries)
        self._present.add(name)
        self.stats.packs += 1
        return name

    async def _put_buffer(self, pack: OpenPack) -> bytes:
        # Nothing appends to the buffer any more: the open pack was replaced
        # before sealing began, under the writer's lock.
        data = pack.buf
        try:
            name = await put_pack(self.backend, data)
        finally:
            # Waiting manifests keep this OpenPack alive until they are
            # written: drop its bytes now, so they cost nothing meanwhile.
            pack.buf = bytearray()
        return name
