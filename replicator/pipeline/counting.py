"""A Backend wrapper counting requests by operation (for run summaries)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence

from replicator.store import bulk, spool
from replicator.store.backend import Backend, Capabilities, ObjectInfo, Payload


class CountingBackend:
    """Delegates to ``inner``; ``counts['put']`` counts put and put_if_absent."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.counts: Counter[str] = Counter()

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        self.counts["put"] += 1
        await self.inner.put(key, data, sha256=sha256)

    async def put_if_absent(self, key: str, data: Payload, *, sha256: bytes | None = None) -> bool:
        self.counts["put"] += 1
        return await self.inner.put_if_absent(key, data, sha256=sha256)

    async def put_many_if_absent(self, items: Sequence[bulk.PutItem]) -> list[bulk.PutOutcome]:
        self.counts["put"] += len(items)
        return await bulk.put_many_if_absent(self.inner, items)

    async def open_spool(self, prefix: str) -> spool.Spool | None:
        return await spool.open_spool(self.inner, prefix)

    async def put_spool(self, key: str, pack: spool.Spool) -> None:
        self.counts["put"] += 1
        await spool.put_spool(self.inner, key, pack)

    async def get_under(self, prefixes: Sequence[str]) -> list[list[tuple[str, bytes]]]:
        found = await bulk.get_under(self.inner, prefixes)
        self.counts["list"] += len(prefixes)
        self.counts["get"] += sum(len(f) for f in found)
        return found

    async def list_names(self, prefix: str) -> AsyncIterator[str]:
        self.counts["list"] += 1
        async for name in bulk.list_names(self.inner, prefix):
            yield name

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self.counts["get"] += 1
        return await self.inner.get(key, start, length)

    async def head(self, key: str) -> ObjectInfo | None:
        self.counts["head"] += 1
        return await self.inner.head(key)

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        self.counts["list"] += 1
        async for info in self.inner.list(prefix, start_after=start_after):
            yield info

    async def delete(self, key: str) -> None:
        self.counts["delete"] += 1
        await self.inner.delete(key)

    async def probe(self) -> Capabilities:
        return await self.inner.probe()

    async def close(self) -> None:
        await self.inner.close()
