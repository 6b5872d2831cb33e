"""The worker pool shared by restore, verify, drill and backfill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from replicator.workers import WorkerPool, run_workers


async def _numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def test_every_item_is_handled_at_most_n_at_a_time() -> None:
    done: list[int] = []
    running = peak = 0

    async def handle(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        done.append(i)

    await run_workers(_numbers(50), handle, 4)
    assert sorted(done) == list(range(50))
    assert peak == 4
    print(f"50 items, 4 workers: at most {peak} at once")


async def test_the_producer_waits_while_the_queue_is_full() -> None:
    release = asyncio.Event()
    put = 0

    async def handle(i: int) -> None:
        await release.wait()

    async def produce(pool: WorkerPool[int]) -> None:
        nonlocal put
        for i in range(100):
            await pool.put(i)
            put += 1

    async with WorkerPool(handle, 2, queue_size=3) as pool:
        producer = asyncio.create_task(produce(pool))
        await asyncio.sleep(0.05)
        # Two items taken by the (blocked) workers, three waiting in the queue.
        assert put == 5
        release.set()
        await producer
    assert put == 100


async def test_an_error_in_the_block_cancels_the_workers() -> None:
    started = asyncio.Event()
    cancelled = 0

    async def handle(i: int) -> None:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    with pytest.raises(RuntimeError, match="listing broke"):
        async with WorkerPool(handle, 3) as pool:
            for i in range(3):
                await pool.put(i)
            await started.wait()
            await asyncio.sleep(0.01)
            raise RuntimeError("listing broke")
    assert cancelled == 3


async def test_a_handler_that_raises_surfaces_when_the_pool_closes() -> None:
    async def handle(i: int) -> None:
        if i == 1:
            raise ValueError("bad item")

    with pytest.raises(ValueError, match="bad item"):
        await run_workers(_numbers(2), handle, 2)


async def test_a_failure_stops_a_producer_waiting_on_a_full_queue() -> None:
    async def handle(i: int) -> None:
        await asyncio.sleep(0.01)
        raise ValueError(f"item {i} failed")

    async def endless() -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    # Every worker dies on its first item: without the failure check the
    # producer would wait for ever on the full queue.
    with pytest.raises(ValueError, match="failed"):
        await asyncio.wait_for(run_workers(endless(), handle, 2), timeout=30)
