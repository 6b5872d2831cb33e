"""When open packs seal for waiting manifests (pipeline/durable.py), against a
real filesystem peer and a real index cache: the commit step only waits."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator.pipeline.durable import SealBudget
from replicator.pipeline.plan import OpenPack, PackWriter
from replicator.store.backends import FsBackend
from replicator.store.index_cache import IndexCache
from replicator.store.placed import Placed
from replicator.store.spool import settle
from tests.unit.test_packs import Batch

KIB = 1024


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[PackWriter]:
    backend = FsBackend(tmp_path / "peer", "peer")
    cache = IndexCache(tmp_path / "cache.sqlite", b"cfg")
    await cache.open()
    yield PackWriter("peer", backend, cache, 64 * KIB)
    await cache.close()
    await backend.close()


async def test_an_open_pack_seals_on_time_for_its_waiters(writer: PackWriter) -> None:
    budget = SealBudget([writer], limit=100, max_delay=0.2)
    first = await writer.place(Batch([os.urandom(KIB)]))
    started = time.monotonic()
    waiting = asyncio.create_task(budget.wait([first]))
    await asyncio.sleep(0.05)
    second = await writer.place(Batch([os.urandom(KIB)]))  # same open pack, later waiter
    [[a]], [[b]] = await asyncio.wait_for(
        asyncio.gather(waiting, budget.wait([second])), timeout=30
    )
    print(f"both waiters durable {time.monotonic() - started:.3f} s after the first (0.2 s delay)")
    assert a.pack == b.pack, "one pack, sealed once, for both waiters"
    assert writer.stats.packs == 1
    budget.close()


async def test_without_a_delay_an_open_pack_waits_for_the_count(writer: PackWriter) -> None:
    budget = SealBudget([writer], limit=2)
    one = await writer.place(Batch([os.urandom(KIB)]))
    waiting = asyncio.create_task(budget.wait([one]))
    await asyncio.sleep(0.3)
    assert not waiting.done() and writer.stats.packs == 0  # backfill: packs fill
    two = await writer.place(Batch([os.urandom(KIB)]))
    await asyncio.wait_for(asyncio.gather(waiting, budget.wait([two])), timeout=30)
    assert writer.stats.packs == 1


async def test_the_timer_never_seals_a_later_pack(writer: PackWriter) -> None:
    """A pack sealed on size before its timer fired: the next open pack,
    which no manifest waits on yet, stays open (it keeps filling)."""
    budget = SealBudget([writer], limit=100, max_delay=0.2)
    early = await writer.place(Batch([os.urandom(KIB)]))
    waiting = asyncio.create_task(budget.wait([early]))
    await asyncio.sleep(0)
    await writer.place(Batch([os.urandom(KIB) for _ in range(64)]))  # fills, seals on size
    later = await writer.place(Batch([os.urandom(KIB)]))
    await asyncio.wait_for(waiting, timeout=30)
    await asyncio.sleep(0.4)  # past the first pack's deadline
    pack = later[0].pack
    assert isinstance(pack, OpenPack) and writer.is_open(pack)
    assert writer.stats.packs == 1
    budget.close()
    await writer.flush()


async def _placed(writer: PackWriter) -> Placed:
    placed = Placed()
    await settle(await writer.place_into(Batch([os.urandom(KIB)]), placed))
    return placed


async def test_a_change_older_than_the_delay_seals_its_pack_at_once(writer: PackWriter) -> None:
    """The delay counts from the change's event: one that already spent it
    (queued behind a burst, say) does not wait another whole delay."""
    budget = SealBudget([writer], limit=100, max_delay=5.0)
    late = await _placed(writer)
    started = time.monotonic()
    [[name]] = await asyncio.wait_for(
        budget.wait_placed([late], since_ns=time.time_ns() - 6_000_000_000), timeout=3
    )
    print(f"a change 6 s old: durable after {time.monotonic() - started:.3f} s (delay 5 s)")
    assert name and writer.stats.packs == 1
    budget.close()


async def test_a_late_waiter_brings_an_armed_timer_forward(writer: PackWriter) -> None:
    budget = SealBudget([writer], limit=100, max_delay=5.0)
    timely = await _placed(writer)
    first = asyncio.create_task(budget.wait_placed([timely], since_ns=time.time_ns()))
    await asyncio.sleep(0.2)
    assert not first.done(), "a change in time waits for its pack to gather"
    late = await _placed(writer)  # the same open pack
    both = asyncio.gather(
        first, budget.wait_placed([late], since_ns=time.time_ns() - 4_900_000_000)
    )
    [[a]], [[b]] = await asyncio.wait_for(both, timeout=3)
    assert a == b and writer.stats.packs == 1
    budget.close()


async def test_an_event_ahead_of_the_clock_waits_the_whole_delay(writer: PackWriter) -> None:
    budget = SealBudget([writer], limit=100, max_delay=0.3)
    placed = await _placed(writer)
    started = time.monotonic()
    await asyncio.wait_for(
        budget.wait_placed([placed], since_ns=time.time_ns() + 60_000_000_000), timeout=30
    )
    waited = time.monotonic() - started
    print(f"event 60 s ahead: sealed after {waited:.3f} s (delay 0.3 s)")
    assert waited >= 0.25
    budget.close()
