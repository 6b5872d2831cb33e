"""The reads of a format 3 store answered from its manifests' heads.

A *head* (store/heads.py) is what the held check and the removal plan
compare of a manifest. The header table (store/segment_cache.py) keeps it
beside each entry: recorded by the writer, or parsed once by the first
reader; so an unchanged re-run reads no segment and parses no JSON.
``SegmentStore`` (store/segment_store.py) takes these methods from
:class:`HeadReads`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Container, Sequence

from replicator.errors import NotFoundError
from replicator.store.heads import Head, head_of, manifest_head
from replicator.store.segment_cache import HeaderTable, Row
from replicator.store.versions import VersionEntry, version_order

#: Seconds a point lookup trusts the table without re-listing ``segments/``.
FRESH = 2.0
#: Keys per page of ``latest_heads`` (each page one thread hop).
PAGE = 1000


class HeadReads:
    """``heads_at`` and ``latest_heads`` of a format 3 store."""

    _table: HeaderTable

    async def refresh(self, max_age: float = 0.0) -> None:
        raise NotImplementedError

    async def _read_rows(self, rows: list[Row]) -> dict[tuple[str, int], bytes]:
        raise NotImplementedError

    def list_versions(
        self, bucket: str, key_prefix: str = "", *, exact: bool = False
    ) -> AsyncIterator[tuple[str, list[VersionEntry]]]:
        raise NotImplementedError

    async def heads_at(self, bucket: str, wanted: Sequence[tuple[str, str]]) -> list[list[Head]]:
        """``versions_at``, answered with each manifest's head (store/heads.py)
        instead of its bytes: from the header table for entries whose head
        it keeps; the others are read and parsed once, and their heads kept."""
        await self.refresh(FRESH)
        try:
            return await self._heads_at(bucket, wanted)
        except NotFoundError:  # a segment went (merged elsewhere): look again
            await self.refresh()
            return await self._heads_at(bucket, wanted)

    async def _heads_at(self, bucket: str, wanted: Sequence[tuple[str, str]]) -> list[list[Head]]:
        found = await asyncio.to_thread(self._table.heads_between, bucket, wanted)
        unknown = [i for i, versions in enumerate(found) if any(h is None for _, h in versions)]
        if not unknown:
            return [[h for _, h in versions if h is not None] for versions in found]
        # Heads not kept yet (segments another writer made, a table rebuilt):
        # those keys' entries are read and parsed once.
        rows = await asyncio.to_thread(self._table.heads, bucket, [wanted[i] for i in unknown])
        parsed = await self._parse_heads([r for rs in rows for r, head in rs if head is None])
        out = [[h for _, h in versions if h is not None] for versions in found]
        for i, rs in zip(unknown, rows, strict=True):
            out[i] = [head or parsed[(r[1], r[2])] for r, head in rs]
        return out

    async def _parse_heads(self, rows: list[Row]) -> dict[tuple[str, int], Head]:
        """The heads of ``rows``' manifests, read and parsed; kept in the
        table when they agree with their entry (bucket, key, event time)."""
        if not rows:
            return {}
        data = await self._read_rows(rows)
        parsed: dict[tuple[str, int], Head] = {}
        keep: list[tuple[str, str, Head]] = []
        for place, segment, offset, _, _, bucket, key in rows:
            head = parsed[(segment, offset)] = head_of(*manifest_head(data[(segment, offset)]))
            name = place.rpartition("/")[2]
            if (
                head[2:4] == (bucket, key)
                and name.startswith(f"{head[7]:020d}-")
                and version_order(name) is not None
            ):
                keep.append((place, segment, head))
        await asyncio.to_thread(self._table.fill, keep)
        return parsed

    async def latest_heads(
        self, bucket: str, key_prefix: str = "", *, skip: Container[str] = ()
    ) -> AsyncIterator[tuple[str, VersionEntry | None, bool | None]]:
        """(key, its newest manifest, whether that is a removal: None when
        not known yet) of every key under ``key_prefix``, in key order (the
        UTF-8 bytes of keys, as a source lists them; ``latest`` is in place
        order), from the header table: one statement per ``PAGE`` keys. Keys
        in ``skip`` come with None for both (the caller only counts them)."""
        await self.refresh(FRESH)
        low, inclusive = key_prefix, True
        while True:
            page = await asyncio.to_thread(self._table.latest, bucket, low, inclusive, PAGE, skip)
            for key, newest in page:
                if not key.startswith(key_prefix):
                    return  # keys with the prefix are contiguous in this order
                if newest is None:
                    yield key, None, None
                    continue
                name, removed, where = newest
                if removed is not None or version_order(name) is not None:
                    # (A known head was recorded for a version name only.)
                    entry = VersionEntry(f"{where[0]}#{where[1]}", key, name, bucket, where)
                    yield key, entry, removed
                    continue
                # Its greatest name is not a version name (verify reports it):
                # its newest version is found as ``latest`` finds it.
                async for k, versions in self.list_versions(bucket, key, exact=True):
                    yield k, versions[-1], None
            if len(page) < PAGE:
                return
            low, inclusive = page[-1][0], False
