"""Repair a peer: store good copies of its damaged chunks, as new packs.

Packs are write-once, so nothing is fixed in place. The steps:

1. *find*: a deep verify of the whole peer names every damaged or missing
   chunk copy and the versions it breaks (and quarantines it);
2. *from the source*: each affected key's current bytes are read and
   chunked; a chunk whose digest is one of the damaged ones is a good copy
   (content addressing is the check);
3. *from other peers*: what the source no longer holds is looked up in each
   other peer's index, fetched, and re-hashed before it is used;
4. *record*: the good copies go to new packs (pack, then index), then a
   ``relocated/`` record per damaged copy says where its good copy is, and
   its ``quarantine/`` record is deleted (``store/quarantine.py``);
5. a second deep verify shows whether the peer is clean.

Chunks no healthy copy holds stay quarantined and are reported with the
versions they break. Before all this, a format 3 peer's damaged segments
(manifests) are repaired where a checked copy exists (``repair_segments.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from replicator._native import ChunkerParams
from replicator.config import Settings
from replicator.errors import ReplicatorError
from replicator.origins import make_origin
from replicator.pipeline.durable import resolve
from replicator.pipeline.plan import PackWriter, Placement
from replicator.pipeline.windows import Chunked, chunk_windows
from replicator.repair_segments import SegmentRepair, repair_segments
from replicator.store.format import ChunkRef, PackRun, pack_key
from replicator.store.index_cache import IndexCache, Location, cache_path
from replicator.store.peer import Peer, make_backend, peer_identity, peer_on, store_config
from replicator.store.quarantine import Damage, DamageMap, Findings, clear, relocate
from replicator.store.reader import ChunkError, decode_chunks, read_store_config
from replicator.verify import VerifyReport, verify


@dataclass
class RepairReport:
    destination: str
    damaged: int = 0  # damaged chunk copies found
    from_source: int = 0  # chunks healed from the source
    from_peers: dict[str, int] = field(default_factory=dict)
    peer_errors: dict[str, str] = field(default_factory=dict)  # peers that could not help
    unrepaired: list[Damage] = field(default_factory=list)
    before: VerifyReport | None = None
    after: VerifyReport | None = None
    segments: list[SegmentRepair] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        segments_ok = all(s.ok for s in self.segments)
        return segments_ok and not self.unrepaired and self.after is not None and self.after.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "damaged_chunks": self.damaged,
            "healed_from_source": self.from_source,
            "healed_from_peers": self.from_peers,
            "peer_errors": self.peer_errors,
            "unrepaired": [damage_json(d) for d in self.unrepaired],
            "segments": [s.to_json() for s in self.segments],
            "problems_before": [p.to_json() for p in self.before.problems] if self.before else [],
            "problems_after": [p.to_json() for p in self.after.problems] if self.after else [],
            "ok": self.ok,
        }


def damage_json(d: Damage) -> dict[str, Any]:
    return {
        "pack": d.pack.hex(),
        "chunk": d.chunk.digest.hex(),
        "reason": d.reason,
        "versions": [{"key": k, "version": v} for k, v in sorted(d.versions)],
    }


class _Picked:
    """Good copies of some chunks, as a packs.ChunkBatch."""

    def __init__(self, items: list[tuple[bytes, memoryview]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def digest(self, i: int) -> bytes:
        return self.items[i][0]

    def length(self, i: int) -> int:
        return self.items[i][1].nbytes

    def data(self, i: int) -> memoryview:
        return self.items[i][1]


@dataclass
class _Healer:
    """Writes good copies of the wanted digests to one peer."""

    writer: PackWriter
    wanted: dict[bytes, ChunkRef]  # digest -> reference, until a good copy is placed
    placed: dict[bytes, Placement] = field(default_factory=dict)

    async def offer(self, items: Iterable[tuple[bytes, memoryview]]) -> int:
        picked = [(d, v) for d, v in items if d in self.wanted and d not in self.placed]
        if not picked:
            return 0
        for (d, _), p in zip(picked, await self.writer.place(_Picked(picked)), strict=True):
            self.placed[d] = p
        return len(picked)

    def missing(self) -> list[bytes]:
        return [d for d in self.wanted if d not in self.placed]


async def repair(settings: Settings, destination: str, *, discard: bool = False) -> RepairReport:
    """Repair ``destination`` from the source and the other peers (``discard``:
    delete the damaged segments nothing can rebuild)."""
    dest = settings.destination(destination)
    backend = make_backend(dest)
    peer = await peer_on(
        dest.name, backend, store_config(settings), peer_identity(dest), create=False
    )
    report = RepairReport(destination)
    try:
        await _clear_stale(peer)
        report.segments = await repair_segments(settings, peer, discard=discard)
        findings = Findings()
        report.before = await verify(peer.backend, settings.source.bucket, None, deep=True,
                                     findings=findings, manifests=peer.manifests)  # fmt: skip
        report.damaged = len(findings.damaged)
        if findings.damaged:
            await _heal(settings, peer, findings, report)
            report.after = await verify(
                peer.backend, settings.source.bucket, None, deep=True, manifests=peer.manifests
            )
        else:
            report.after = report.before
    finally:
        await peer.close()
    return report


async def _clear_stale(peer: Peer) -> None:
    """Quarantine records of copies already relocated (a repair interrupted
    between writing the relocation and clearing the record)."""
    damage = await DamageMap.load(peer.backend)
    for pack, chunk in damage.quarantined & damage.relocated.keys():
        await clear(peer.backend, pack, chunk)


async def _heal(settings: Settings, peer: Peer, findings: Findings, report: RepairReport) -> None:
    damage = await DamageMap.load(peer.backend)
    # Explicitly, not only through quarantine/: recording may have failed.
    damage.quarantined.update(findings.damaged)
    cache = IndexCache(cache_path(settings.store.cache_dir, peer.identity), peer.config.to_bytes())
    await cache.open()
    try:
        await cache.sync(peer.backend)
        writer = PackWriter(
            peer.name,
            peer.backend,
            cache,
            settings.store.pack_size,
            settings.store.compression,
            damage=damage,
        )
        wanted = {d.chunk.digest: d.chunk for d in findings.damaged.values()}
        healer = _Healer(writer, wanted)
        keys = {k for d in findings.damaged.values() for k, _ in d.versions}
        report.from_source = await _from_source(settings, peer.config.chunker, keys, healer)
        for other in settings.destinations:
            if other.name != peer.name and healer.missing():
                try:
                    report.from_peers[other.name] = await _from_peer(settings, other.name, healer)
                except (ReplicatorError, OSError) as exc:
                    # One source less; the chunks it could have given stay listed.
                    report.peer_errors[other.name] = str(exc)
        await writer.flush()
        await _record(peer, findings, healer)
    finally:
        await cache.close()
    report.unrepaired = [
        d for d in findings.damaged.values() if d.chunk.digest not in healer.placed
    ]


async def _from_source(
    settings: Settings, params: ChunkerParams, keys: set[str], healer: _Healer
) -> int:
    """Chunks of the source's current versions of ``keys`` that are wanted."""
    origin = make_origin(settings)
    found = 0
    try:
        for key in sorted(keys):
            if not healer.missing():
                break
            with contextlib.suppress(ReplicatorError, OSError):
                # Gone or changed while read: other copies may still help.
                found += await _source_key(origin, key, params, healer)
    finally:
        await origin.close()
    return found


async def _source_key(origin: Any, key: str, params: ChunkerParams, healer: _Healer) -> int:
    found = 0
    async for obj in origin.list(key):
        if obj.key != key:
            continue
        reader = await origin.open(obj)
        try:
            async for batch in chunk_windows(reader, params, origin.window_size, Chunked()):
                items = ((batch.digest(i), i) for i in range(len(batch)))
                # Only the wanted chunks' bytes are looked at (joined if spanning).
                found += await healer.offer(
                    (d, batch.data(i)) for d, i in items if d in healer.wanted
                )
        finally:
            await reader.close()
    return found


async def _from_peer(settings: Settings, name: str, healer: _Healer) -> int:
    """Wanted chunks another peer holds, fetched and re-hashed."""
    dest = settings.destination(name)
    backend = make_backend(dest)
    found = 0
    try:
        config = await read_store_config(backend)
        damage = await DamageMap.load(backend)
        cache = IndexCache(cache_path(settings.store.cache_dir, peer_identity(dest)),
                           config.to_bytes())  # fmt: skip
        await cache.open()
        try:
            await cache.sync(backend)
            hits = await cache.lookup(healer.missing())
        finally:
            await cache.close()
        for digest, loc in hits.items():
            good = damage.resolve(loc.pack, digest) or loc
            if (raw := await _fetch_copy(backend, digest, good)) is not None:
                found += await healer.offer([(digest, memoryview(raw))])
    finally:
        await backend.close()
    return found


async def _fetch_copy(backend: Any, digest: bytes, loc: Location) -> bytes | None:
    """The chunk's raw bytes at ``loc`` if they hash to ``digest``."""
    ref = ChunkRef(digest, loc.length, loc.stored_length, loc.compression)
    run = PackRun(loc.pack, loc.offset, (ref,))
    try:
        data = await backend.get(pack_key(loc.pack), loc.offset, loc.stored_length)
    except ReplicatorError:
        return None
    ((_, result),) = decode_chunks(run, data)
    return None if isinstance(result, ChunkError) else result


async def _record(peer: Peer, findings: Findings, healer: _Healer) -> None:
    """relocated/ for every healed copy (after its pack and index are
    durable: resolve waits for them), then its quarantine record goes."""
    digests = list(healer.placed)
    locations = await resolve([healer.placed[d] for d in digests])
    where = dict(zip(digests, locations, strict=True))
    for pack, digest in findings.damaged:
        if (loc := where.get(digest)) is None:
            continue
        # A pack is named by its bytes: when the good copies re-created a
        # missing pack whole, the manifests' own references are good again.
        if loc.pack != pack:
            await relocate(peer.backend, pack, digest, loc)
        await clear(peer.backend, pack, digest)
