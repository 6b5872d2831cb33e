"""Streaming comparison of a source listing with a peer's manifests.

Vocabulary: a *pair* is one key with what the source lists for it (an
ObjectVersion, or None when the source no longer has it) and the store name
of the peer's newest manifest for it (or None). The backfill's removal pass,
``verify --against-source`` and the daemon's start-up reconcile all walk the
same pairs (``compare``).

Memory is bounded whatever the object count: both sides are merged as two
streams sorted by the key's UTF-8 bytes, never collected in a set. The
source lists in that order already (S3 does; the filesystem origin sorts
each directory). The peer lists in the order of *escaped* names, which is
not key order (``a b`` escapes to ``a%20b`` and sorts after ``a!``), so its
keys go through an external merge sort: sorted runs of ``RUN_SIZE`` entries
spilled to temporary files, merged back with a heap. A source listing found
out of order ends the comparison with an error: merging it would report
keys as absent that are not.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from replicator.errors import ReplicatorError
from replicator.origins import ObjectVersion
from replicator.pipeline.reconcile import keys_at_peer
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.manifest_store import ManifestStore, entry_ref, manifests_of

#: Peer keys sorted in memory at once before a run is spilled to disk
#: (about 300 bytes each: a key and a manifest name).
RUN_SIZE = 20_000
#: Lines read from a spill file per thread hop.
_PAGE = 2_000

T = TypeVar("T")


class ListingOrderError(ReplicatorError):
    """The source listing is not in key order: absence would prove nothing."""


def key_bytes(key: str) -> bytes:
    """The order S3 lists keys in (UTF-8 bytes; a file name's own bytes)."""
    return key.encode("utf-8", "surrogateescape")


@record(frozen=True, slots=True)
class Pair:
    key: str
    source: ObjectVersion | None
    peer: str | None  # ref of the peer's newest manifest of the key (manifest_store.entry_ref)


async def compare(
    source: AsyncIterable[ObjectVersion], peer: AsyncIterable[tuple[str, str]]
) -> AsyncIterator[Pair]:
    """Merge a source listing and (key, newest manifest) pairs, both in key order."""
    src, dst = aiter(_in_order(source)), aiter(peer)
    s, d = await anext(src, None), await anext(dst, None)
    while s is not None or d is not None:
        sk = key_bytes(s.key) if s is not None else None
        dk = key_bytes(d[0]) if d is not None else None
        if s is not None and (dk is None or (sk is not None and sk < dk)):
            yield Pair(s.key, s, None)
            s = await anext(src, None)
        elif d is not None and (sk is None or (dk is not None and dk < sk)):
            yield Pair(d[0], None, d[1])
            d = await anext(dst, None)
        elif s is not None and d is not None:
            yield Pair(s.key, s, d[1])
            s, d = await anext(src, None), await anext(dst, None)


async def _in_order(source: AsyncIterable[ObjectVersion]) -> AsyncIterator[ObjectVersion]:
    last: bytes | None = None
    async for obj in source:
        k = key_bytes(obj.key)
        if last is not None and k <= last:
            raise ListingOrderError(
                f"the source listed {obj.key!r} after a key that sorts after it (or twice): "
                "not comparing an unordered listing"
            )
        last = k
        yield obj


async def peer_keys(
    backend: Backend | ManifestStore, bucket: str, key_prefix: str
) -> AsyncIterator[tuple[str, str]]:
    """``keys_at_peer`` in key order: a format 3 peer's header table gives
    that order itself; other listings go through an external merge sort
    (bounded memory)."""
    manifests = manifests_of(backend)
    latest_heads = getattr(manifests, "latest_heads", None)
    if latest_heads is not None:
        async for key, entry, _ in latest_heads(bucket, key_prefix):
            yield key, entry_ref(entry)
        return
    async for item in sorted_by_key(keys_at_peer(backend, bucket, key_prefix)):
        yield item


async def sorted_by_key(
    items: AsyncIterable[tuple[str, str]], run_size: int = RUN_SIZE
) -> AsyncIterator[tuple[str, str]]:
    """``items`` sorted by ``key_bytes`` of their first field; at most
    ``run_size`` of them in memory, the rest in temporary files."""

    def order(item: tuple[str, str]) -> bytes:
        return key_bytes(item[0])

    import tempfile  # noqa: PLC0415 - only a spilled sort uses it; a re-run skips ~5 ms

    with tempfile.TemporaryDirectory(prefix="replicator-sort-") as tmp:
        runs: list[Spill[tuple[str, str]]] = []
        buf: list[tuple[str, str]] = []
        async for item in items:
            buf.append(item)
            if len(buf) >= run_size:
                runs.append(await asyncio.to_thread(_spill_run, Path(tmp), len(runs), buf, order))
                buf = []
        buf.sort(key=order)
        if not runs:
            for item in buf:
                yield item
            return
        runs.append(await asyncio.to_thread(_spill_run, Path(tmp), len(runs), buf, order))
        merged = heapq.merge(*(r.lines() for r in runs), key=order)
        while page := await asyncio.to_thread(lambda: list(itertools.islice(merged, _PAGE))):
            for item in page:
                yield item


def _spill_run(
    tmp: Path, n: int, buf: list[tuple[str, str]], order: Callable[[tuple[str, str]], bytes]
) -> Spill[tuple[str, str]]:
    buf.sort(key=order)
    spill: Spill[tuple[str, str]] = Spill(tmp / f"run-{n}", _pair_to_json, _pair_from_json)
    for item in buf:
        spill.add(item)
    spill.close()
    return spill


def _pair_to_json(item: tuple[str, str]) -> Any:
    return list(item)


def _pair_from_json(v: Any) -> tuple[str, str]:
    return (str(v[0]), str(v[1]))


class Spill(Generic[T]):
    """Items appended to a JSON-lines file, read back in the same order.

    JSON with ASCII escapes keeps any key exact (newlines, and the lone
    surrogates that stand for a file name's non-UTF-8 bytes)."""

    def __init__(self, path: Path, encode: Callable[[T], Any], decode: Callable[[Any], T]) -> None:
        self.path = path
        self.count = 0
        self._encode, self._decode = encode, decode
        self._out: IO[str] | None = open(path, "w", encoding="ascii")  # noqa: SIM115

    def add(self, item: T) -> None:
        assert self._out is not None, "spill already closed"
        self._out.write(json.dumps(self._encode(item), ensure_ascii=True) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def lines(self) -> Generator[T, None, None]:
        with open(self.path, encoding="ascii") as f:
            for line in f:
                yield self._decode(json.loads(line))

    async def replay(self) -> AsyncIterator[T]:
        """The items, paged through a thread (file reads off the event loop)."""
        self.close()
        it = self.lines()
        try:
            while page := await asyncio.to_thread(lambda: list(itertools.islice(it, _PAGE))):
                for item in page:
                    yield item
        finally:
            it.close()

    def remove(self) -> None:
        self.close()
        os.unlink(self.path)
