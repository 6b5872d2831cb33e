"""Store format 3: the ManifestStore that keeps manifests in segments.

A group commit (``put_many``) writes one segment per bucket (more only past
``MAX_SEGMENT`` bytes): on a filesystem one file, one fsync and one sync of
its directory, with no directory per key; on S3 one PUT. Versions some
segment already holds are answered False from the header table
(store/segment_cache.py) and not written again.

Reads go through the header table, reconciled with a listing of
``segments/`` (only new segments' headers are read): a scan (``entries``,
``list_versions``, ``latest``) always reconciles first; a point lookup
(``versions_at``, ``put_many``, one key's versions) when the last one is
older than ``FRESH`` seconds. A stale table costs at worst a duplicate entry
(same name, same bytes; readers take one), never a wrong answer about what
this store wrote itself, which it records as it writes.

The table is kept per peer (the innermost backend), so every
``manifest_store`` over that peer's backend or a wrapper of it shares it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from replicator.errors import IntegrityError, NotFoundError
from replicator.store.backend import Backend
from replicator.store.bulk import put_many_if_absent
from replicator.store.format import Manifest, StoreConfig
from replicator.store.manifest_store import grouped
from replicator.store.names import MANIFESTS, encode_segment, manifest_prefix
from replicator.store.segment_cache import PLACE_END, HeaderTable, Row, after, place_of
from replicator.store.segments import (
    HEADER_READ,
    SEGMENTS,
    SegmentEntry,
    SegmentHeader,
    check_entry,
    encode,
    header_length,
    parse,
    parse_header,
    parse_segment_key,
    split_batches,
)
from replicator.store.versions import VersionEntry

log = logging.getLogger(__name__)

#: Seconds a point lookup trusts the table without re-listing ``segments/``.
FRESH = 2.0
#: Rows per page of a scan (each page one thread hop).
PAGE = 1000
#: Headers fetched at once while reconciling.
FETCHES = 8
#: Entries of one segment read together when at most this far apart.
GAP = 64 * 1024
#: Skipped segments reported one by one (the rest are counted).
MAX_REPORTS = 20
#: Entry digests remembered from scans, so that reading an entry just listed
#: (restore, verify) needs no table lookup: a thread hop costs more than the read.
MEMO = 16384


@dataclass(eq=False)
class _PeerState:
    table: HeaderTable
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    synced_at: float | None = None
    #: Segments found unreadable in the last reconcile: (name, why).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (segment, offset) -> BLAKE3 of entries scanned lately (at most MEMO).
    digests: OrderedDict[tuple[str, int], bytes] = field(default_factory=OrderedDict)

    def remember(self, rows: list[Row]) -> None:
        for r in rows:
            self.digests[(r[1], r[2])] = r[4]
        while len(self.digests) > MEMO:
            self.digests.popitem(last=False)


@dataclass(frozen=True, slots=True)
class SegmentProblem:
    """A damaged segment, or a version two segments hold with different bytes."""

    segment: str
    message: str
    key: str = ""
    version: str = ""


_states: weakref.WeakKeyDictionary[object, _PeerState] = weakref.WeakKeyDictionary()


def _innermost(backend: Backend) -> object:
    inner: object = backend
    while (deeper := getattr(inner, "inner", None)) is not None:
        inner = deeper
    return inner


def segment_store(backend: Backend, config: StoreConfig, cache: Path | None = None) -> SegmentStore:
    """The format 3 store over ``backend``, sharing its peer's header table
    (kept in ``cache`` when given the first time, else a temporary database)."""
    peer = _innermost(backend)
    state = _states.get(peer)
    if state is None:
        try:
            table = HeaderTable(cache, config.to_bytes())
        except (OSError, sqlite3.Error) as exc:
            # Only a cache: the peer is read as well without it, more slowly.
            log.warning("segment header cache %s: %s; using a temporary one", cache, exc)
            table = HeaderTable(None, config.to_bytes())
        state = _states[peer] = _PeerState(table)
        weakref.finalize(peer, table.close)
    return SegmentStore(backend, state)


class SegmentStore:
    """Manifests in segments (see the module doc)."""

    def __init__(self, backend: Backend, state: _PeerState) -> None:
        self.backend = backend
        self._state = state
        self._table = state.table

    # ------------------------------------------------------------ writes

    async def put_many(self, manifests: Sequence[Manifest]) -> list[bool | BaseException]:
        answers: list[bool | BaseException] = [False] * len(manifests)
        if not manifests:
            return answers
        todo: dict[str, list[tuple[int, str, str, bytes, str]]] = defaultdict(list)
        for i, m in enumerate(manifests):
            try:
                ident, version = m.identity, m.version_name
                place = place_of(ident.bucket, ident.key, version)
                todo[ident.bucket].append((i, ident.key, version, m.to_bytes(), place))
            except Exception as exc:  # that manifest's own answer
                answers[i] = exc
        await self.refresh(FRESH)
        places = [item[4] for items in todo.values() for item in items]
        held = await asyncio.to_thread(self._table.present, places)
        for bucket, items in todo.items():
            new: dict[str, tuple[int, str, str, bytes, str]] = {}
            for item in items:  # a version held, or twice in this call: written once
                if item[4] not in held:
                    new.setdefault(item[4], item)
            fresh = list(new.values())
            start = 0
            for batch in split_batches([(k, v, d) for _, k, v, d, _ in fresh]):
                index = [item[0] for item in fresh[start : start + len(batch)]]
                start += len(batch)
                await self._put_segment(bucket, batch, index, answers)
        return answers

    async def _put_segment(
        self,
        bucket: str,
        batch: list[tuple[str, str, bytes]],
        index: list[int],
        answers: list[bool | BaseException],
    ) -> None:
        """Write one segment of ``batch``; answer the manifests at ``index``."""
        seg = encode(bucket, batch)
        item = (seg.name, seg.data, hashlib.sha256(seg.data).digest())
        # One item: on a filesystem its group commit is one file, one fsync,
        # one directory sync (and the crash point between file and link).
        (outcome,) = await put_many_if_absent(self.backend, [item])
        if isinstance(outcome, Exception):
            for i in index:
                answers[i] = outcome
            return
        # False: a replay wrote these very bytes before; its entries are there.
        await asyncio.to_thread(self._table.record, [(seg.name, seg.header)])
        for i in index:
            answers[i] = outcome

    # ------------------------------------------------------------ reconcile

    async def refresh(self, max_age: float = 0.0) -> None:
        """Reconcile the header table with ``segments/`` unless it was done
        less than ``max_age`` seconds ago."""
        state = self._state
        async with state.lock:
            if state.synced_at is not None and time.monotonic() - state.synced_at < max_age:
                return
            started = time.monotonic()
            state.skipped = []
            await asyncio.to_thread(self._table.begin_sync)
            page: list[tuple[str, int]] = []
            async for info in self.backend.list(SEGMENTS):
                page.append((info.key, info.size))
                if len(page) >= PAGE:
                    await self._sync_page(page)
                    page = []
            await self._sync_page(page)
            await asyncio.to_thread(self._table.sweep)
            state.synced_at = started
            if len(state.skipped) > MAX_REPORTS:
                log.warning(
                    "destination %r: skipped %d segments", self.backend.name, len(state.skipped)
                )

    async def _sync_page(self, page: list[tuple[str, int]]) -> None:
        sizes = dict(page)
        unknown = await asyncio.to_thread(self._table.stamp, list(sizes))
        sem = asyncio.Semaphore(FETCHES)

        async def fetch(name: str) -> tuple[str, SegmentHeader] | None:
            async with sem:
                try:
                    parse_segment_key(name)
                    return name, await self._header(name, sizes[name])
                except NotFoundError:  # removed between list and get
                    return None
                except (IntegrityError, ValueError) as exc:
                    self._skip(name, str(exc))
                    return None

        found = [h for h in await asyncio.gather(*map(fetch, unknown)) if h is not None]
        await asyncio.to_thread(self._table.record, found)

    def _skip(self, name: str, why: str) -> None:
        # Left out of the table, its manifests are written again by the next
        # writer that has them (a new segment); verify names the damage.
        if len(self._state.skipped) < MAX_REPORTS:
            log.warning("destination %r: skipped %s: %s", self.backend.name, name, why)
        self._state.skipped.append((name, why))

    async def _header(self, name: str, size: int) -> SegmentHeader:
        data = await self.backend.get(name, 0, min(size, HEADER_READ))
        if len(data) >= size:  # the whole segment: check it against its name too
            return parse(data, name)
        need = header_length(data, name) + 1
        if len(data) < need:
            data += await self.backend.get(name, len(data), need - len(data))
        return parse_header(data, name, size)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(segment, why) of the segments the last reconcile could not read."""
        return list(self._state.skipped)

    async def conflicts(self) -> list[tuple[str, str, str, list[str]]]:
        """(bucket, key, version name, segments) held with different bytes."""
        await self.refresh()
        return await asyncio.to_thread(self._table.conflicts)

    async def audit(self) -> list[SegmentProblem]:
        """What ``verify`` reports beyond each manifest's own checks: segments
        that cannot be read, and versions held with two different bytes."""
        found = await self.conflicts()  # reconciles first, which fills skipped
        # (The reader's errors name the segment already; the finding names it apart.)
        problems = [
            SegmentProblem(name, why.removeprefix(f"segment {name}: "))
            for name, why in self.skipped
        ]
        problems += [
            SegmentProblem(
                " ".join(segments),
                f"bucket {bucket!r}: two different manifests under one version "
                f"(segments {', '.join(segments)})",
                key,
                version,
            )
            for bucket, key, version, segments in found
        ]
        return problems

    # ------------------------------------------------------------ reads

    async def _scan(self, low: str, high: str) -> AsyncIterator[VersionEntry]:
        while True:
            rows = await asyncio.to_thread(self._table.page, low, high, PAGE)
            self._state.remember(rows)
            for row in rows:
                yield _entry(row)
            if len(rows) < PAGE:
                return
            low = after(rows[-1][0])

    async def entries(
        self, bucket: str | None = None, key_prefix: str = ""
    ) -> AsyncIterator[VersionEntry]:
        if bucket is None and key_prefix:
            raise ValueError("a key prefix needs a bucket")
        await self.refresh()
        low = "" if bucket is None else _low(bucket, key_prefix)
        async for entry in self._scan(low, low + PLACE_END):
            yield entry

    async def list_versions(
        self, bucket: str, key_prefix: str = "", *, exact: bool = False
    ) -> AsyncIterator[tuple[str, list[VersionEntry]]]:
        if exact:
            await self.refresh(FRESH)
            low = f"{encode_segment(bucket)}/{encode_segment(key_prefix)}/"
        else:
            await self.refresh()
            low = _low(bucket, key_prefix)
        async for key, versions in grouped(self._scan(low, low + PLACE_END)):
            if key.startswith(key_prefix) and (not exact or key == key_prefix):
                yield key, versions

    async def latest(
        self, bucket: str, key_prefix: str = ""
    ) -> AsyncIterator[tuple[str, VersionEntry]]:
        async for key, versions in self.list_versions(bucket, key_prefix):
            yield key, versions[-1]

    async def versions_at(
        self, bucket: str, wanted: Sequence[tuple[str, str]]
    ) -> list[list[tuple[VersionEntry, bytes]]]:
        await self.refresh(FRESH)
        ebucket = encode_segment(bucket)
        spans = [(low := f"{ebucket}/{encode_segment(k)}/{p}", low + PLACE_END) for k, p in wanted]
        found = await asyncio.to_thread(self._table.ranges, spans)
        # A longer key's split name continues below a key's own: exact key only.
        rows = [[r for r in rs if r[6] == k] for (k, _), rs in zip(wanted, found, strict=True)]
        data = await self._read_rows([r for rs in rows for r in rs])
        return [[(_entry(r), data[(r[1], r[2])]) for r in rs] for rs in rows]

    async def _read_rows(self, rows: list[Row]) -> dict[tuple[str, int], bytes]:
        """The checked bytes of each row's entry: one ranged read per run of
        nearby entries of one segment."""
        by_segment: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            by_segment[r[1]].append(r)
        spans: list[list[Row]] = []
        for segment_rows in by_segment.values():
            segment_rows.sort(key=lambda r: r[2])
            spans.append([segment_rows[0]])
            for r in segment_rows[1:]:
                last = spans[-1][-1]
                if r[2] - (last[2] + last[3]) <= GAP:
                    spans[-1].append(r)
                else:
                    spans.append([r])
        out: dict[tuple[str, int], bytes] = {}
        for part in await asyncio.gather(*map(self._read_span, spans)):
            out.update(part)
        return out

    async def _read_span(self, span: list[Row]) -> dict[tuple[str, int], bytes]:
        segment, start = span[0][1], span[0][2]
        end = max(r[2] + r[3] for r in span)
        try:
            data = await self.backend.get(segment, start, end - start)
        except NotFoundError:
            await asyncio.to_thread(self._table.forget, segment)
            raise
        return {
            (segment, r[2]): check_entry(
                data[r[2] - start : r[2] - start + r[3]], _header_entry(r), segment
            )
            for r in span
        }

    async def read(self, entry: VersionEntry) -> bytes:
        if entry.where is None:
            raise NotFoundError(f"{entry.store_key}: not an entry of a format 3 store")
        segment, offset, length = entry.where
        digest = self._state.digests.get((segment, offset))
        if digest is None:
            digest = await asyncio.to_thread(self._table.digest, segment, offset)
        try:
            if digest is None:  # not (or no longer) in the table: its header says
                return await self._read_unlisted(segment, offset, length)
            data = await self.backend.get(segment, offset, length)
        except NotFoundError:
            await asyncio.to_thread(self._table.forget, segment)
            raise
        found = SegmentEntry(entry.key, entry.version_name, offset, length, digest)
        return check_entry(data, found, segment)

    async def _read_unlisted(self, segment: str, offset: int, length: int) -> bytes:
        data = await self.backend.get(segment)
        for e in parse(data, segment).entries:
            if (e.offset, e.length) == (offset, length):
                return check_entry(data[offset : offset + length], e, segment)
        raise IntegrityError(f"segment {segment}: no entry of {length} bytes at offset {offset}")


def _low(bucket: str, key_prefix: str) -> str:
    return manifest_prefix(bucket, key_prefix).removeprefix(MANIFESTS)


def _entry(row: Row) -> VersionEntry:
    place, segment, offset, length, _, bucket, key = row
    return VersionEntry(
        f"{segment}#{offset}", key, place.rpartition("/")[2], bucket, (segment, offset, length)
    )


def _header_entry(row: Row) -> SegmentEntry:
    place, _, offset, length, digest, _, key = row
    return SegmentEntry(key, place.rpartition("/")[2], offset, length, digest)
