"""A bounded queue feeding a fixed number of worker tasks.

restore, verify, drill and backfill all walk a listing and hand each item
to ``parallel`` workers. The queue holds at most ``queue_size`` items
(default: two per worker), so a listing of any length costs bounded memory:
the producer waits while the workers are busy.

Leaving the ``async with`` block normally waits until every item put has
been handled; leaving it with an exception (or a cancellation) cancels the
workers. A handler is expected to deal with its item's own errors: the
first exception one raises stops the pool (the next ``put``, or the end of
the block, raises it) instead of leaving a producer waiting on a queue
that no worker drains.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable
from types import TracebackType
from typing import Generic, TypeVar, cast

T = TypeVar("T")

#: Put once per worker when the producer is done: "no more items".
_STOP = object()


class WorkerPool(Generic[T]):
    """``async with WorkerPool(handle, n) as pool: await pool.put(item)``."""

    def __init__(
        self, handle: Callable[[T], Awaitable[None]], workers: int, queue_size: int | None = None
    ) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._handle = handle
        self._count = workers
        self._queue: asyncio.Queue[T | object] = asyncio.Queue(queue_size or 2 * workers)
        self._tasks: list[asyncio.Task[None]] = []
        #: The first exception a handler raised; the pool stops taking items.
        self._failure: Exception | None = None
        self._failed = asyncio.Event()

    async def __aenter__(self) -> WorkerPool[T]:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._count)]
        return self

    async def put(self, item: T) -> None:
        """Hand ``item`` to the workers; waits while the queue is full.
        Raises the handler's exception once one has failed."""
        await self._put(item)

    async def _put(self, item: T | object) -> None:
        if self._failure is not None:
            raise self._failure
        if not self._queue.full():
            self._queue.put_nowait(item)
            return
        # A full queue: wait for room, or for a failure (the workers that
        # would have made room may be the ones that failed).
        putting = asyncio.ensure_future(self._queue.put(item))
        failing = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({putting, failing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failing.cancel()
            putting.cancel()  # a no-op once the item is in
        if self._failure is not None:
            raise self._failure

    async def _work(self) -> None:
        while (item := await self._queue.get()) is not _STOP:
            try:
                await self._handle(cast(T, item))
            except Exception as exc:
                if self._failure is None:
                    self._failure = exc
                self._failed.set()
                return

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                for _ in self._tasks:
                    await self._put(_STOP)
                await asyncio.gather(*self._tasks)
                if self._failure is not None:
                    raise self._failure
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_workers(
    items: AsyncIterable[T], handle: Callable[[T], Awaitable[None]], workers: int
) -> None:
    """``handle`` every item of ``items``, ``workers`` at a time."""
    async with WorkerPool(handle, workers) as pool:
        async for item in items:
            await pool.put(item)
