"""Store format 3: the ManifestStore that keeps manifests in segments.

A group commit (``put_many``) writes one segment per bucket (more only past
``MAX_SEGMENT`` bytes): on a filesystem one file, one fsync and one sync of
its directory, with no directory per key; on S3 one PUT. Versions some
segment already holds are answered False from the header table
(store/segment_cache.py) and not written again.

Reads go through the header table, reconciled with a listing of
``segments/`` (only new segments' headers are read): a scan (``entries``,
``list_versions``, ``latest``) always reconciles first; a point lookup
(``versions_at``, one key's versions) when the last one is older than
``FRESH`` seconds, a group commit when older than ``WRITE_FRESH``. An entry
whose segment has gone is looked up again after a fresh listing. A stale
table costs at worst a duplicate entry (same name, same bytes; readers take
one), never a wrong answer about what this store wrote itself, which it
records as it writes (store/segment_sync.py reconciles).

The table is kept per peer (the innermost backend), so every
``manifest_store`` over that peer's backend or a wrapper of it shares it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from replicator.errors import IntegrityError, NotFoundError
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.bulk import put_many_if_absent
from replicator.store.format import Manifest, StoreConfig
from replicator.store.heads import Head, head_of
from replicator.store.manifest_store import grouped
from replicator.store.names import MANIFESTS, encode_segment, manifest_prefix
from replicator.store.segment_cache import PLACE_END, HeaderTable, Row, after, place_of
from replicator.store.segment_heads import FRESH, HeadReads
from replicator.store.segment_sync import (
    DamagedSegment,
    PeerState,
    damaged_of,
    held_text,
    reconcile,
)
from replicator.store.segments import (
    SegmentEntry,
    check_entry,
    encode_named,
    parse,
    split_batches,
)
from replicator.store.versions import VersionEntry

#: Re-exported: what ``damaged()`` answers (defined beside the reconcile that finds them).
__all__ = ["DamagedSegment", "SegmentProblem", "SegmentStore", "segment_store"]

log = logging.getLogger(__name__)

#: The same for a group commit: the table already has what this process
#: wrote, and a version another writer added meanwhile only costs a
#: duplicate entry (a daemon commits every fraction of a second).
WRITE_FRESH = 60.0
#: Rows per page of a scan (each page one thread hop).
PAGE = 1000
#: Entries of one segment read together when at most this far apart.
GAP = 64 * 1024


@record(frozen=True, slots=True)
class SegmentProblem:
    """A damaged segment, or a version two segments hold with different bytes."""

    segment: str
    message: str
    key: str = ""
    version: str = ""


_states: weakref.WeakKeyDictionary[object, PeerState] = weakref.WeakKeyDictionary()


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
        state = _states[peer] = PeerState(table)
        weakref.finalize(peer, table.close)
    return SegmentStore(backend, state)


class SegmentStore(HeadReads):
    """Manifests in segments (see the module doc)."""

    def __init__(self, backend: Backend, state: PeerState) -> None:
        self.backend = backend
        self._state = state
        self._table = state.table

    @property
    def state(self) -> PeerState:
        """What every store over this peer shares (its header table)."""
        return self._state

    # ------------------------------------------------------------ writes

    async def put_many(self, manifests: Sequence[Manifest]) -> list[bool | BaseException]:
        answers: list[bool | BaseException] = [False] * len(manifests)
        texts: list[tuple[str, str, str, bytes, Head]] = []
        index: list[int] = []
        for i, m in enumerate(manifests):
            try:
                ident = m.identity
                data, head = m.to_bytes(), head_of(m.removed, ident)
                texts.append((ident.bucket, ident.key, m.version_name, data, head))
                index.append(i)
            except Exception as exc:  # that manifest's own answer
                answers[i] = exc
        for i, answer in zip(index, await self.put_texts(texts), strict=True):
            answers[i] = answer
        return answers

    async def put_texts(
        self, texts: Sequence[tuple[str, str, str, bytes, Head]]
    ) -> list[bool | BaseException]:
        """``put_many`` of manifests already written out: (bucket, key,
        version name, bytes, head) each (``pipeline.manifests.CreatedTexts``);
        the heads are recorded with the entries, so a re-run reads none of them."""
        answers: list[bool | BaseException] = [False] * len(texts)
        if not texts:
            return answers
        # Per bucket: (manifest, key, version name, bytes, sort name, place).
        todo: dict[str, list[tuple[int, str, str, bytes, str, str]]] = defaultdict(list)
        buckets: dict[str, str] = {}
        heads: dict[str, Head] = {}
        for i, (bucket, key, version, data, head) in enumerate(texts):
            ebucket = buckets.get(bucket)
            if ebucket is None:
                ebucket = buckets[bucket] = encode_segment(bucket)
            sort = f"{encode_segment(key)}/{version}"  # segments.sort_name
            place = f"{ebucket}/{sort}"
            todo[bucket].append((i, key, version, data, sort, place))
            heads[place] = head
        await self.refresh(WRITE_FRESH)
        places = [item[5] for items in todo.values() for item in items]
        held = await asyncio.to_thread(self._table.present, places)
        repeats: list[tuple[int, int]] = []  # (manifest, its first copy in this call)
        for bucket, items in todo.items():
            new: dict[str, tuple[int, str, str, bytes, str, str]] = {}
            for item in items:  # a version held, or twice in this call: written once
                if item[5] not in held and new.setdefault(item[5], item) is not item:
                    repeats.append((item[0], new[item[5]][0]))
            fresh = list(new.values())
            start = 0
            for batch in split_batches([(k, v, d) for _, k, v, d, _, _ in fresh]):
                part = fresh[start : start + len(batch)]
                start += len(batch)
                rows = [(sort, k, v, d) for _, k, v, d, sort, _ in part]
                await self._put_segment(bucket, rows, [item[0] for item in part], answers, heads)
        for i, first in repeats:  # present once its first copy is; failed with it
            answers[i] = answers[first] if isinstance(answers[first], BaseException) else False
        return answers

    async def _put_segment(
        self,
        bucket: str,
        rows: list[tuple[str, str, str, bytes]],
        index: list[int],
        answers: list[bool | BaseException],
        heads: dict[str, Head] | None = None,
    ) -> None:
        """Write one segment of ``rows`` (sort name, key, version name,
        bytes); answer the manifests at ``index``."""
        seg = encode_named(bucket, rows)
        item = (seg.name, seg.data, hashlib.sha256(seg.data).digest())
        # One item: on a filesystem its group commit is one file, one fsync,
        # one directory sync (and the crash point between file and link).
        (outcome,) = await put_many_if_absent(self.backend, [item])
        if outcome is False:
            outcome = await self._replace_if_damaged(item)
        if isinstance(outcome, Exception):
            for i in index:
                answers[i] = outcome
            return
        # False: a replay wrote these very bytes before; its entries are there.
        await asyncio.to_thread(self._table.record, [(seg.name, seg.header)], heads)
        for i in index:
            answers[i] = outcome

    async def _replace_if_damaged(self, item: tuple[str, bytes, bytes]) -> bool | Exception:
        """The object of this name exists: False when it is these very bytes
        (a replay); when it is not, it was damaged since it was written (the
        name is these bytes' BLAKE3), and these bytes replace it: the answer
        "present" must not point readers at a segment none can read."""
        name, data, sha256 = item
        try:
            held = await self.backend.get(name)
        except NotFoundError:
            held = b""  # removed since (compacted): written again below
        except Exception as exc:  # that segment's own answer, as a failed put
            return exc
        if held == data:
            return False
        try:
            await self.backend.put(name, data, sha256=sha256)
        except Exception as exc:
            return exc
        log.warning("destination %r: rewrote damaged segment %s", self.backend.name, name)
        return True

    # ------------------------------------------------------------ reconcile

    async def refresh(self, max_age: float = 0.0) -> None:
        """Reconcile the header table with ``segments/`` unless it was done
        less than ``max_age`` seconds ago."""
        await reconcile(self.backend, self._state, max_age)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(segment, why) of the segments the last reconcile could not read."""
        return list(self._state.skipped)

    async def conflicts(self) -> list[tuple[str, str, str, list[str]]]:
        """(bucket, key, version name, segments) held with different bytes."""
        await self.refresh()
        return await asyncio.to_thread(self._table.conflicts)

    async def damaged(
        self, bucket: str | None = None, max_age: float = FRESH
    ) -> list[DamagedSegment]:
        """The unreadable segments (of ``bucket``), reconciled unless that was
        done less than ``max_age`` seconds ago. An object under ``segments/``
        whose name is no segment's is left out: no reader reads it."""
        await self.refresh(max_age)
        return damaged_of(self._state, bucket)

    async def audit(self) -> list[SegmentProblem]:
        """What ``verify`` reports beyond each manifest's own checks: segments
        that cannot be read, and versions held with two different bytes."""
        found = await self.conflicts()  # reconciles first, which fills skipped
        # (The reader's errors name the segment already; the finding names it apart.)
        problems = [
            SegmentProblem(
                name, why.removeprefix(f"segment {name}: ") + held_text(name, self._state)
            )
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

    async def holds(self, bucket: str, key_prefix: str = "") -> bool:
        """Is any manifest of ``bucket`` under ``key_prefix`` here? (``entries``
        would fetch a page of them to answer.)"""
        await self.refresh()
        low = _low(bucket, key_prefix)
        return bool(await asyncio.to_thread(self._table.page, low, low + PLACE_END, 1))

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
        try:
            return await self._versions_at(bucket, wanted)
        except NotFoundError:  # a segment went (merged elsewhere): look again
            await self.refresh()
            return await self._versions_at(bucket, wanted)

    async def _versions_at(
        self, bucket: str, wanted: Sequence[tuple[str, str]]
    ) -> list[list[tuple[VersionEntry, bytes]]]:
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
        try:
            return await self._read_at(entry, entry.where)
        except NotFoundError:
            # The segment is gone (merged into others by a compaction, say):
            # the version is read wherever a fresh listing now has it.
            await asyncio.to_thread(self._table.forget, entry.where[0])
            await self.refresh()
            place = place_of(entry.bucket, entry.key, entry.version_name)
            rows = await asyncio.to_thread(self._table.page, place, after(place), 1)
            if not rows:
                raise
            return await self._read_at(entry, _entry(rows[0]).where or entry.where)

    async def _read_at(self, entry: VersionEntry, where: tuple[str, int, int]) -> bytes:
        segment, offset, length = where
        digest = self._state.digests.get((segment, offset))
        if digest is None:
            digest = await asyncio.to_thread(self._table.digest, segment, offset)
        if digest is None:  # not (or no longer) in the table: its header says
            return await self._read_unlisted(segment, offset, length)
        data = await self.backend.get(segment, offset, length)
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
