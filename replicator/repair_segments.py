"""Repair of a format 3 peer's damaged segments (the first step of ``repair``).

A segment is named by the BLAKE3 of its bytes, and each entry in it by its
own BLAKE3 in the header, so every copy used here is checked first:

1. *the same segment elsewhere*: another peer holding a segment of that name
   holds the very bytes (checked against the name): it replaces the damaged
   one in place.
2. *what its header lists* (only its body is damaged), each version:
   already in another segment of this peer (a replay's duplicate): nothing
   to do; else its entry, if it still matches its header digest; else that
   version's manifest at another peer, if every chunk it references is at
   this peer where it says (pack, offset, index entry). These are written
   again (one new segment per group, ``put_many``), and when every version
   the header lists is held again, the damaged segment is deleted.
3. *its header is unreadable*: what it held is unknown, so nothing proves a
   repair complete. It is left in place and the report says so: a backfill
   writes the source's current versions again (the held check finds them
   missing); older versions it held exist only at other peers.

A segment that stays damaged is deleted only when the operator says so
(``discard``, after that backfill): the versions only it held are then lost
at this peer, and every reader stops reporting it.

Every damaged segment found is then forgotten by the header table that
backfill and the daemon keep in ``store.cache_dir``: a segment damaged after
that table recorded it is otherwise still trusted there (its header is not
read again), and the held check would keep answering "held" for versions
nobody can read, so no writer would ever write them again.

Formats 1 and 2 have no segments: nothing is done.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from replicator.config import Settings
from replicator.errors import ReplicatorError
from replicator.store.format import Manifest
from replicator.store.index_cache import default_cache_dir, segment_cache_path
from replicator.store.manifest_store import ManifestStore
from replicator.store.peer import Peer, make_backend, peer_identity, peer_on, store_config
from replicator.store.reader import parse_manifest
from replicator.store.segment_cache import HeaderTable
from replicator.store.segments import check_entry, encode, parse, parse_header
from replicator.store.versions import VersionEntry
from replicator.verify import Packs, not_in_index

UNKNOWN = (
    "its header is unreadable, so which manifests it held is unknown and no other peer "
    "holds this segment: left in place"
)
#: What the operator can do about a segment left in place.
NEXT = (
    "run `replicator backfill` (it writes the source's current versions again), then "
    "`replicator repair --discard-damaged-segments` to delete it; older versions only it "
    "held are at other peers alone (restore them from there)"
)


@dataclass
class SegmentRepair:
    """What repair did about one damaged segment."""

    segment: str
    why: str
    done: str = ""
    ok: bool = False
    #: (key, version name) its header lists that no healthy copy holds.
    lost: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        lost = [{"key": k, "version": v} for k, v in self.lost]
        return {"segment": self.segment, "why": self.why, "done": self.done, "ok": self.ok,
                "lost": lost}  # fmt: skip


async def repair_segments(
    settings: Settings, peer: Peer, *, discard: bool = False
) -> list[SegmentRepair]:
    """Repair every damaged segment of ``peer``; with ``discard``, delete
    those that cannot be (see the module doc)."""
    damaged = getattr(peer.manifests, "damaged", None)
    if not callable(damaged):
        return []
    found = await damaged(None, 0.0)
    if not found:
        return []
    others = await _open_others(settings, peer.name)
    try:
        out = [await _repair_one(peer, others, seg) for seg in found]
        for result in out:
            if not result.ok:
                await _left(peer, result, discard)
    finally:
        for other in others:
            await other.close()
    await asyncio.to_thread(_forget_in_cache, settings, peer, [s.segment for s in found])
    refresh = getattr(peer.manifests, "refresh", None)
    if callable(refresh):
        await refresh()  # what follows (the deep verify) sees the repaired peer
    return out


async def _left(peer: Peer, result: SegmentRepair, discard: bool) -> None:
    """A segment nothing could rebuild: deleted when the operator said so."""
    if not discard:
        result.done += f"; {NEXT}"
        return
    await peer.backend.delete(result.segment)
    result.done += "; deleted (--discard-damaged-segments): versions only it held are lost here"
    result.ok = True


def _forget_in_cache(settings: Settings, peer: Peer, names: list[str]) -> None:
    """Make the writers' header table read these segments' headers afresh."""
    path = segment_cache_path(settings.store.cache_dir or default_cache_dir(), peer.identity)
    if not path.exists():
        return  # no writer has a table of this peer here
    table = HeaderTable(path, peer.config.to_bytes())
    try:
        for name in names:
            table.forget(name)
    finally:
        table.close()


async def _open_others(settings: Settings, name: str) -> list[Peer]:
    """Every other destination that opens as a store (one that does not can't help)."""
    out = []
    for dest in settings.destinations:
        if dest.name == name:
            continue
        try:
            backend = make_backend(dest)
            out.append(await peer_on(dest.name, backend, store_config(settings),
                                     peer_identity(dest), create=False))  # fmt: skip
        except (ReplicatorError, OSError):
            continue
    return out


async def _repair_one(peer: Peer, others: list[Peer], seg: Any) -> SegmentRepair:
    result = SegmentRepair(seg.segment, seg.why)
    for other in others:
        if await _copy_segment(peer, other, seg.segment):
            result.done, result.ok = f"replaced by the same segment from peer {other.name!r}", True
            return result
    if seg.held is None:
        result.done = UNKNOWN
        return result
    await _rewrite(peer, others, seg, result)
    return result


async def _copy_segment(peer: Peer, other: Peer, name: str) -> bool:
    """Put ``other``'s segment ``name`` here if its bytes hash to the name."""
    try:
        if await other.backend.head(name) is None:
            return False
        data = await other.backend.get(name)
        parse(data, name)  # the whole segment against its name
        await peer.backend.put(name, data)
    except (ReplicatorError, OSError):
        return False
    return True


async def _rewrite(peer: Peer, others: list[Peer], seg: Any, result: SegmentRepair) -> None:
    """Write again what the segment's header lists; delete it when all is held."""
    bucket, wanted = seg.bucket, list(seg.held)
    held = {(e.key, e.version_name) for e in await _held(peer.manifests, bucket, wanted)}
    todo = [kv for kv in wanted if kv not in held]
    own = await _own_entries(peer, seg.segment, bucket, todo)
    todo = [kv for kv in todo if kv not in own]
    borrowed, lenders = await _borrow(peer, others, bucket, todo)
    # Every entry recovered encodes to the segment's own name again: a
    # put-if-absent would find the damaged object there and keep it.
    recovered = own | borrowed
    parts = f"{len(held)} held elsewhere here, {len(own)} from its intact entries, " + (
        f"{len(borrowed)} from peers {', '.join(sorted(lenders))}" if lenders else "0 from peers"
    )
    whole = not held and len(recovered) == len(wanted)
    if whole and await _in_place(peer, seg.segment, bucket, recovered):
        result.done, result.ok = f"rewritten in place, its bytes whole again ({parts})", True
        return
    manifests = [m for m, _ in recovered.values()]
    if manifests:
        await peer.manifests.put_many(manifests)  # a failed one shows in the check below
    # Held again means listed from a readable segment (the damaged one never
    # is): a re-encoding that collapsed onto its name would not count.
    await peer.manifests.refresh()  # type: ignore[attr-defined]
    now = {(e.key, e.version_name) for e in await _held(peer.manifests, bucket, wanted)}
    result.lost = [kv for kv in wanted if kv not in now]
    if result.lost:
        lost = len(result.lost)
        result.done = f"of its {len(wanted)} manifests {parts}; {lost} lost: left in place"
        return
    # Only now, with every version it listed durable elsewhere, does it go.
    await peer.backend.delete(seg.segment)
    result.done, result.ok = f"removed: its {len(wanted)} manifests are held again ({parts})", True


async def _in_place(
    peer: Peer, name: str, bucket: str, own: dict[tuple[str, str], tuple[Manifest, bytes]]
) -> bool:
    """Every entry intact (a separator byte was hit): the entries encode to
    the segment's own name again, and those bytes replace the damaged ones."""
    again = encode(bucket, [(k, v, raw) for (k, v), (_, raw) in own.items()])
    if again.name != name:
        return False
    await peer.backend.put(name, again.data)
    return True


async def _held(
    store: ManifestStore, bucket: str, wanted: list[tuple[str, str]]
) -> list[VersionEntry]:
    try:
        found = await store.versions_at(bucket, wanted)
    except ReplicatorError:  # a copy that does not read is no copy
        return []
    return [e for (k, v), f in zip(wanted, found, strict=True) for e, _ in f
            if (e.key, e.version_name) == (k, v)]  # fmt: skip


async def _own_entries(
    peer: Peer, name: str, bucket: str, todo: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Manifest, bytes]]:
    """The entries of the damaged segment that still match their header digests."""
    try:
        data = await peer.backend.get(name)
        header = parse_header(data, name, len(data))
    except (ReplicatorError, OSError):
        return {}
    wanted: set[tuple[str, str]] = set(todo)
    out: dict[tuple[str, str], tuple[Manifest, bytes]] = {}
    for e in header.entries:
        if (e.key, e.version_name) not in wanted:
            continue
        try:
            raw = check_entry(data[e.offset : e.offset + e.length], e, name)
            entry = VersionEntry(f"{name}#{e.offset}", e.key, e.version_name, bucket, (name, 0, 0))
            out[(e.key, e.version_name)] = (parse_manifest(raw, entry), raw)
        except ReplicatorError:
            continue
    return out


async def _borrow(
    peer: Peer, others: list[Peer], bucket: str, todo: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], tuple[Manifest, bytes]], set[str]]:
    """Other peers' manifests of ``todo`` whose every chunk is at this peer."""
    packs, lenders = Packs(peer.backend), set()
    out: dict[tuple[str, str], tuple[Manifest, bytes]] = {}
    for other in others:
        need = [kv for kv in todo if kv not in out]
        if not need:
            break
        try:
            found = await other.manifests.versions_at(bucket, need)
        except (ReplicatorError, OSError):
            continue
        for (key, version), copies in zip(need, found, strict=True):
            for entry, raw in copies:
                if entry.version_name != version:
                    continue
                try:
                    m = parse_manifest(raw, entry)
                except ReplicatorError:
                    continue
                if await references_hold(packs, m):
                    out[(key, version)] = (m, raw)
                    lenders.add(other.name)
                    break
    return out, lenders


async def references_hold(packs: Packs, manifest: Manifest) -> bool:
    """Does this peer hold every chunk ``manifest`` references, where it says
    (pack long enough, chunk in the pack's index at that offset)?"""
    for run in manifest.runs:
        size = await packs.size(run.pack)
        if size is None or run.offset + run.stored_length > size:
            return False
        try:
            index = await packs.index(run.pack)
        except ReplicatorError:
            return False
        if next(not_in_index(run, index), None) is not None:
            return False
    return True
