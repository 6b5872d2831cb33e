"""Retrying around any Backend (restic's layering: the backend says which
errors are permanent, the wrapper decides how often to try again).

Only errors whose class says ``retriable = True`` are retried (timeouts,
5xx, throttling, cut connections); a 403, a 404 or an integrity failure is
an answer, not an accident, and is raised at once. Delays are "full jitter"
exponential backoff (a uniform draw in ``[0, min(cap, base * 2**n)]``), so
many daemons retrying against one recovering peer spread out instead of
arriving together. Attempts are bounded: a peer that stays down surfaces as
an error (and a growing RPO), not as a stuck task.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from replicator.errors import ReplicatorError
from replicator.records import record
from replicator.store import bulk, spool
from replicator.store.backend import Backend, Capabilities, ObjectInfo, Payload

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


@record(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 20.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")

    def delay(self, retry: int, rng: random.Random) -> float:
        """The pause before retry number ``retry`` (0 for the first retry)."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0**retry))


def is_retriable(exc: BaseException) -> bool:
    return isinstance(exc, ReplicatorError) and type(exc).retriable


class RetryingBackend:
    """A Backend that retries the retriable failures of another one."""

    def __init__(
        self,
        inner: Backend,
        policy: RetryPolicy | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()  # jitter needs no secrecy
        self._sleep = sleep
        #: Retries performed so far (for tests and metrics).
        self.retries = 0

    def __repr__(self) -> str:
        return f"RetryingBackend({self.inner!r}, {self.policy})"

    async def _run(self, op: Callable[[], Awaitable[T]]) -> T:
        retry = 0
        while True:
            try:
                return await op()
            except ReplicatorError as exc:
                if not is_retriable(exc) or retry + 1 >= self.policy.attempts:
                    raise
            await self._pause(retry)
            retry += 1

    async def _pause(self, retry: int) -> None:
        self.retries += 1
        await self._sleep(self.policy.delay(retry, self._rng))

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        await self._run(lambda: self.inner.put(key, data, sha256=sha256))

    async def put_if_absent(self, key: str, data: Payload, *, sha256: bytes | None = None) -> bool:
        # After an ambiguous failure the retry may answer False for bytes this
        # writer stored; for content-addressed keys both mean "present".
        return await self._run(lambda: self.inner.put_if_absent(key, data, sha256=sha256))

    async def put_many_if_absent(self, items: Sequence[bulk.PutItem]) -> list[bulk.PutOutcome]:
        if not bulk.has_batch(self.inner, "put_many_if_absent"):
            return await bulk.put_each(self, items)  # each put retried alone
        return await self._run(lambda: bulk.put_many_if_absent(self.inner, items))

    async def get_under(self, prefixes: Sequence[str]) -> list[list[tuple[str, bytes]]]:
        if not bulk.has_batch(self.inner, "get_under"):
            return list(await asyncio.gather(*(bulk.under_one(self, p) for p in prefixes)))
        return await self._run(lambda: bulk.get_under(self.inner, prefixes))

    async def list_names(self, prefix: str = "") -> AsyncIterator[str]:
        """``list``'s names, resumed after the last one yielded as ``list`` is."""
        if not bulk.has_batch(self.inner, "list_names"):
            async for info in self.list(prefix):
                yield info.key
            return
        last, retry = "", 0
        while True:
            try:
                async for name in bulk.list_names(self.inner, prefix):
                    if name > last:
                        yield name
                        last, retry = name, 0
                return
            except ReplicatorError as exc:
                if not is_retriable(exc) or retry + 1 >= self.policy.attempts:
                    raise
            await self._pause(retry)
            retry += 1

    async def open_spool(self, prefix: str) -> spool.Spool | None:
        return await spool.open_spool(self.inner, prefix)

    async def put_spool(self, key: str, pack: spool.Spool) -> None:
        # Publishing is an fsync and a rename of bytes already written: a
        # failure is the disk's, not a transient one, and is not retried.
        await spool.put_spool(self.inner, key, pack)

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return await self._run(lambda: self.inner.get(key, start, length))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._run(lambda: self.inner.head(key))

    async def delete(self, key: str) -> None:
        await self._run(lambda: self.inner.delete(key))

    async def probe(self) -> Capabilities:
        return await self._run(self.inner.probe)

    async def close(self) -> None:
        await self.inner.close()

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """List, resuming after the last key yielded when a page fails.

        The retry budget is per page: each page that arrives resets it."""
        last = start_after
        retry = 0
        while True:
            try:
                async for info in self.inner.list(prefix, start_after=last):
                    yield info
                    last = info.key
                    retry = 0
                return
            except ReplicatorError as exc:
                if not is_retriable(exc) or retry + 1 >= self.policy.attempts:
                    raise
            await self._pause(retry)
            retry += 1
