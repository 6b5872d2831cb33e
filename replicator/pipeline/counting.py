"""A Backend wrapper counting requests by operation (for run summaries)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

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
