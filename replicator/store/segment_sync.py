"""Reconciling a format 3 peer's header table with its ``segments/`` listing.

Mark and sweep by generation (the pack index cache notes listed packs in
a temporary table instead): every listed segment the table knows is
stamped; the headers of the others are read (a ranged read of the
segment's start; the whole segment, checked against its name, when it is
small) and recorded; segments no longer listed are
forgotten, and so are known segments listed with another size than
recorded, whose headers are then read again (``_resized``). A segment that
cannot be read is left out and remembered for ``verify`` and ``restore``;
its manifests are written again by the next writer that has them. When
only its body is damaged, the (key, version) pairs its header lists are
remembered too (``salvaged``), so readers can name the versions they miss;
they are never recorded in the table (the held check must keep answering
"not held" for them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import field

from replicator.errors import IntegrityError, NotFoundError, ReplicatorError
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.segment_cache import HeaderTable, Row
from replicator.store.segments import (
    HEADER_READ,
    SEGMENTS,
    SegmentHeader,
    header_length,
    parse,
    parse_header,
    parse_segment_key,
)

log = logging.getLogger(__name__)

#: Segments listed per page (one stamp of the table each).
PAGE = 1000
#: Headers fetched at once while reconciling.
FETCHES = 8
#: Skipped segments reported one by one (the rest are counted).
MAX_REPORTS = 20
#: Entry digests remembered from scans, so that reading an entry just listed
#: (restore, verify) needs no table lookup: a thread hop costs more than the read.
MEMO = 16384


@record(eq=False)
class PeerState:
    """What every store over one peer shares: its table and when it was reconciled."""

    table: HeaderTable
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    synced_at: float | None = None
    #: Segments found unreadable in the last reconcile: (name, why).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Of those, the (key, version name) pairs a still readable header lists.
    salvaged: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    #: (segment, offset) -> BLAKE3 of entries scanned lately (at most MEMO).
    digests: OrderedDict[tuple[str, int], bytes] = field(default_factory=OrderedDict)

    def remember(self, rows: list[Row]) -> None:
        for r in rows:
            self.digests[(r[1], r[2])] = r[4]
        while len(self.digests) > MEMO:
            self.digests.popitem(last=False)


async def reconcile(backend: Backend, state: PeerState, max_age: float = 0.0) -> None:
    """Bring ``state.table`` up to the listing unless that was done less than
    ``max_age`` seconds ago."""
    async with state.lock:
        if state.synced_at is not None and time.monotonic() - state.synced_at < max_age:
            return
        started = time.monotonic()
        state.skipped = []
        state.salvaged = {}
        await asyncio.to_thread(state.table.begin_sync)
        page: list[tuple[str, int]] = []
        async for info in backend.list(SEGMENTS):
            page.append((info.key, info.size))
            if len(page) >= PAGE:
                await _sync_page(backend, state, page)
                page = []
        await _sync_page(backend, state, page)
        await asyncio.to_thread(state.table.sweep)
        state.synced_at = started
        if len(state.skipped) > MAX_REPORTS:
            log.warning("destination %r: skipped %d segments", backend.name, len(state.skipped))


async def _sync_page(backend: Backend, state: PeerState, page: list[tuple[str, int]]) -> None:
    sizes = dict(page)
    unknown = await asyncio.to_thread(state.table.stamp, list(sizes))
    unknown += await asyncio.to_thread(_resized, state.table, sizes, set(unknown))
    sem = asyncio.Semaphore(FETCHES)

    async def fetch(name: str) -> tuple[str, SegmentHeader] | None:
        async with sem:
            try:
                parse_segment_key(name)
                return name, await read_header(backend, name, sizes[name])
            except NotFoundError:  # removed between list and get
                return None
            except (IntegrityError, ValueError) as exc:
                _skip(backend, state, name, str(exc))
                if (held := await _salvage(backend, name, sizes[name])) is not None:
                    state.salvaged[name] = held
                return None

    found = [h for h in await asyncio.gather(*map(fetch, unknown)) if h is not None]
    await asyncio.to_thread(state.table.record, found)


def _resized(table: HeaderTable, sizes: dict[str, int], unknown: set[str]) -> list[str]:
    """The known segments among ``sizes`` listed with another size than the
    table recorded, forgotten, so that their headers are read again.

    A segment is written once and never changes: another size means it was
    damaged (cut short, or written over) after the table recorded it. Kept,
    its entries would still count as held, and no writer would write those
    versions again; read again, its header fails (its entries must end at
    the listed size) and the reconcile skips it like any unreadable one.
    The sizes come with the listing: the guard reads nothing more."""
    known = [name for name in sizes if name not in unknown]
    recorded: dict[str, int] = {}
    # One scan per fan-out directory of this page (names are listed in order).
    for where in sorted({name.rpartition("/")[0] for name in known}):
        recorded.update(table.segments(where + "/"))
    resized = [n for n in known if n in recorded and recorded[n] != sizes[n]]
    for name in resized:
        table.forget(name)
    return resized


def _skip(backend: Backend, state: PeerState, name: str, why: str) -> None:
    if len(state.skipped) < MAX_REPORTS:
        short = why.removeprefix(f"segment {name}: ")  # the name once is enough
        log.warning("destination %r: skipped %s: %s", backend.name, name, short)
    state.skipped.append((name, why))


async def _salvage(backend: Backend, name: str, size: int) -> tuple[tuple[str, str], ...] | None:
    """(key, version name) of each entry a damaged segment's header still
    lists (its header parses, whatever its body); None when it does not."""
    try:
        parse_segment_key(name)
        data = await backend.get(name, 0, min(size, HEADER_READ))
        need = header_length(data, name) + 1
        if len(data) < need:
            data += await backend.get(name, len(data), need - len(data))
        header = parse_header(data, name, size)
    except (ReplicatorError, ValueError, OSError):  # best effort: only a name is lost
        return None
    return tuple((e.key, e.version_name) for e in header.entries)


async def read_header(backend: Backend, name: str, size: int) -> SegmentHeader:
    """The header of segment ``name`` (``size`` bytes): one ranged read,
    two when the header is longer than ``HEADER_READ``."""
    data = await backend.get(name, 0, min(size, HEADER_READ))
    if len(data) >= size:  # the whole segment: check it against its name too
        return parse(data, name)
    need = header_length(data, name) + 1
    if len(data) < need:
        data += await backend.get(name, len(data), need - len(data))
    return parse_header(data, name, size)


@record(frozen=True, slots=True)
class DamagedSegment:
    """A segment the last reconcile could not read (restore, drill and
    repair name it): why, its bucket (from its name), and the (key, version
    name) of each manifest it holds when its header still reads (else None:
    it may hold any version of its bucket)."""

    segment: str
    why: str
    bucket: str
    held: tuple[tuple[str, str], ...] | None = None


def damaged_of(state: PeerState, bucket: str | None) -> list[DamagedSegment]:
    """The segments (of ``bucket``) the last reconcile could not read. An
    object under ``segments/`` whose name is no segment's is left out: no
    reader reads it."""
    out = []
    for name, why in state.skipped:
        try:
            of = parse_segment_key(name)[0]
        except ValueError:
            continue
        if bucket is None or of == bucket:
            held = state.salvaged.get(name)
            out.append(DamagedSegment(name, why.removeprefix(f"segment {name}: "), of, held))
    return out


def held_text(name: str, state: PeerState) -> str:
    """What a damaged segment's still readable header says it held."""
    held = state.salvaged.get(name)
    if held is None and not _is_segment(name):
        return ""  # not a segment's name: nothing was ever read from it
    if not held:
        return "; its header is unreadable: which manifests it held is unknown"
    key, version = held[0]
    more = f" and {len(held) - 1} more" if len(held) > 1 else ""
    return f"; its header lists {len(held)} manifests (key {key!r} version {version}{more})"


def _is_segment(name: str) -> bool:
    try:
        parse_segment_key(name)
    except ValueError:
        return False
    return True
