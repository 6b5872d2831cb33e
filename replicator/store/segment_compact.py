"""Compaction of a format 3 peer: many small segments of a bucket merged
into few sorted ones.

Daemon commits make one small segment each, with key ranges that overlap,
and every reader lists them all. ``compact`` reads up to ``BUDGET`` bytes of
a bucket's small segments (each checked against its name), writes their
entries, one per (key, version name), into new segments sorted by place and
cut at ``MAX_SEGMENT``, and only once those are durable deletes the inputs.

Why deleting at once is safe: nothing in the store refers to a segment by
name, and every input's entries are in a durable output before the input
goes, so at every moment each version is in some segment. A reader whose
table still names a deleted input gets NotFoundError and looks the version
up again after a fresh listing (SegmentStore.read and versions_at), which
shows the outputs, written before the deletion. Two compactors racing only
write the same entries twice (readers take one). Segments that cannot be
read or that hold a version with bytes another segment disagrees with are
left alone for ``verify`` to report.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from replicator.errors import IntegrityError, NotFoundError
from replicator.store.bulk import put_many_if_absent
from replicator.store.segment_store import SegmentStore
from replicator.store.segments import (
    MAX_SEGMENT,
    encode,
    parse,
    segment_prefix,
    sort_name,
    split_batches,
)

#: A bucket is compacted once it has at least this many small segments.
COMPACT_AT = 64
#: Segments below this size are "small" (inputs of a compaction).
SMALL = MAX_SEGMENT // 4
#: Bytes of input segments read by one compaction (memory bound).
BUDGET = 4 * MAX_SEGMENT


@dataclass(frozen=True, slots=True)
class CompactStats:
    inputs: int  # segments merged and deleted
    outputs: int  # segments written
    entries: int  # entries in the outputs


async def compact(store: SegmentStore, bucket: str, *, at_least: int = COMPACT_AT) -> CompactStats:
    """Merge ``bucket``'s small segments when it has ``at_least`` of them."""
    await store.refresh()
    table = store.state.table
    known = await asyncio.to_thread(table.segments, segment_prefix(bucket))
    bad = {s for _, _, _, segs in await asyncio.to_thread(table.conflicts) for s in segs}
    bad |= {name for name, _ in store.skipped}
    small = [(n, size) for n, size in known if size < SMALL and n not in bad]
    if len(small) < max(at_least, 2):
        return CompactStats(0, 0, 0)
    inputs: list[str] = []
    total = 0
    for name, size in sorted(small, key=lambda s: s[1]):
        if inputs and total + size > BUDGET:
            break
        inputs.append(name)
        total += size
    entries = await _entries_of(store, inputs)
    if entries is None:
        return CompactStats(0, 0, 0)
    outputs = [encode(bucket, batch) for batch in split_batches(entries)]
    items = [(s.name, s.data, hashlib.sha256(s.data).digest()) for s in outputs]
    for outcome in await put_many_if_absent(store.backend, items):
        if isinstance(outcome, Exception):
            raise outcome  # nothing deleted: the inputs still hold every entry
    await asyncio.to_thread(table.record, [(s.name, s.header) for s in outputs])
    written = {s.name for s in outputs}
    for name in inputs:
        if name not in written:  # (the same entries can encode to an input's bytes)
            await store.backend.delete(name)
            await asyncio.to_thread(table.forget, name)
    return CompactStats(len(inputs), len(outputs), len(entries))


async def _entries_of(store: SegmentStore, names: list[str]) -> list[tuple[str, str, bytes]] | None:
    """Every entry of the segments ``names``, once each, in place order; None
    when one of them vanished or proved damaged (a later run tries again)."""
    found: dict[str, tuple[str, str, bytes]] = {}
    for name in names:
        try:
            data = await store.backend.get(name)
            header = parse(data, name)
        except (NotFoundError, IntegrityError):
            return None
        for e in header.entries:
            entry = data[e.offset : e.offset + e.length]
            place = sort_name(e.key, e.version_name)
            if found.setdefault(place, (e.key, e.version_name, entry))[2] != entry:
                return None  # two different bytes under one version: verify's to report
    return [found[p] for p in sorted(found)]
