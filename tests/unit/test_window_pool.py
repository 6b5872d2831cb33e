"""Read windows reused across objects (pipeline/windows.py ``WindowPool``):
fresh 8 MiB windows were zero-filled and page-faulted in for every changed
file; a pooled one is handed out only once nothing reads it any more."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, blake3_digest
from replicator.origins import ObjectVersion
from replicator.origins.fs import FsOrigin
from replicator.pipeline import windows
from replicator.pipeline.durable import pack_names
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.ship import Shipped, ship
from replicator.pipeline.windows import Chunked, WindowPool, capacity, chunk_windows
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_spool import FsSpool
from replicator.store.format import pack_key
from replicator.store.index_cache import IndexCache
from replicator.store.spool import Piece

KIB = 1024
PARAMS = ChunkerParams(1024, 4096, 16384)
WINDOW = 64 * KIB


class SlowSpool(FsSpool):
    """Appends that take a while: the next object is read meanwhile."""

    def write(self, pieces: Sequence[Piece]) -> None:
        time.sleep(0.05)
        super().write(pieces)


class SlowPeer(FsBackend):
    async def open_spool(self, prefix: str) -> FsSpool:
        directory = self._path(prefix)

        def run() -> FsSpool:
            self._ensure_dir(directory)
            return SlowSpool(directory, self._error)

        return await asyncio.to_thread(run)


async def _files(tmp_path: Path, sizes: Sequence[int]) -> tuple[FsOrigin, list[ObjectVersion]]:
    src = tmp_path / "src"
    src.mkdir()
    for i, size in enumerate(sizes):
        (src / f"f{i:02d}").write_bytes(os.urandom(size))
    await asyncio.sleep(0.05)  # past the racy-clean window of the files' ctimes
    origin = FsOrigin(src)
    return origin, [o async for o in origin.list()]


async def _ship(
    origin: FsOrigin, obj: ObjectVersion, writer: PackWriter, pool: WindowPool
) -> Shipped:
    reader = await origin.open(obj)
    try:
        return await ship(reader, PARAMS, WINDOW, [writer], pool=pool)
    finally:
        await reader.close()


async def _stored_correctly(peer: FsBackend, shipped: Shipped, name: str) -> bool:
    """Every chunk as stored in the peer's packs re-hashes to its digest."""
    placed = shipped.placements[name]
    names = await pack_names(placed)
    for i in range(len(placed)):
        pack = names[placed.pack_ix[i]]
        data = await peer.get(pack_key(pack), placed.offsets[i], placed.lengths[i])
        if blake3_digest(data) != bytes(shipped.digests[i * 32 : (i + 1) * 32]):
            return False
    return True


def test_capacities_pool_small_windows_by_power_of_two_and_large_ones_exactly() -> None:
    assert capacity(64 * KIB) == 64 * KIB
    assert capacity(64 * KIB + 1) == capacity(128 * KIB) == 128 * KIB
    assert capacity(1024 * KIB) == 1024 * KIB
    assert capacity(8 * 1024 * KIB) == 8 * 1024 * KIB  # the origin's window
    assert capacity(10 * 1024 * KIB + 3) == 10 * 1024 * KIB + 3


async def test_objects_read_one_after_another_reuse_their_windows(
    tmp_path: Path, caches: list[IndexCache]
) -> None:
    """Twenty objects of several windows each: three buffers (windows.WINDOWS_AHEAD),
    six when the last appends of one object still run as the next one starts
    (the old code made fresh ones per object), and every chunk stored intact."""
    origin, objs = await _files(tmp_path, [300 * KIB + i * 977 for i in range(20)])
    peer = FsBackend(tmp_path / "peer", "peer")
    writer = PackWriter("peer", peer, caches[0], 256 * KIB)
    pool = WindowPool()
    shipped = [await _ship(origin, obj, writer, pool) for obj in objs]
    await writer.flush()
    print(f"{len(objs)} objects: {pool.allocated} windows allocated, {pool.idle_bytes} B idle")
    assert pool.allocated <= 2 * windows.WINDOWS_AHEAD
    assert all([await _stored_correctly(peer, s, "peer") for s in shipped])


async def test_a_window_an_append_still_reads_is_not_handed_out(
    tmp_path: Path, caches: list[IndexCache]
) -> None:
    """Slow spool appends: each object's last appends still run when the
    next object is read. A window goes back to the pool only after the
    appends reading it, so no object's bytes are overwritten by the next
    one's read (every chunk re-hashes from the packs)."""
    # Three windows each, the last one nearly full: its chunks are appended
    # (not carried), and those appends are the ones still running.
    origin, objs = await _files(tmp_path, [188 * KIB + i * 101 for i in range(8)])
    peer = SlowPeer(tmp_path / "peer", "peer")
    writer = PackWriter("peer", peer, caches[0], 128 * KIB)
    pool = WindowPool()
    shipped = [await _ship(origin, obj, writer, pool) for obj in objs]
    await writer.flush()
    print(f"{len(objs)} objects: {pool.allocated} windows allocated")
    assert all([await _stored_correctly(peer, s, "peer") for s in shipped])


async def test_windows_come_back_only_when_their_appends_are_done(tmp_path: Path) -> None:
    origin, [obj] = await _files(tmp_path, [50 * KIB])  # one window's read
    pool = WindowPool()
    held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reader = await origin.open(obj)
    try:
        async for batch in chunk_windows(reader, PARAMS, WINDOW, Chunked(), pool):
            if len(batch):
                batch.busy.append(held)  # an append still reading this window
    finally:
        await reader.close()
    assert pool.idle_bytes == 0, "held by the append"
    held.set_result(None)
    await asyncio.sleep(0.01)  # the done callbacks run
    assert pool.idle_bytes == 2 * WINDOW


async def test_a_cancelled_read_never_returns_its_windows(tmp_path: Path) -> None:
    """A read cancelled mid-way may still be filling a window in its thread:
    that window must not serve another object."""
    origin, [obj] = await _files(tmp_path, [300 * KIB])
    gate, entered = threading.Event(), threading.Event()

    class Stuck:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        async def readinto(self, buf: memoryview) -> int:
            def blocked() -> int:
                entered.set()
                gate.wait(10)
                return 0

            return await asyncio.to_thread(blocked)

    pool = WindowPool()
    reader = await origin.open(obj)

    async def consume() -> None:
        async for _ in chunk_windows(Stuck(reader), PARAMS, WINDOW, Chunked(), pool):  # type: ignore[arg-type]
            pass

    task = asyncio.create_task(consume())
    await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await reader.close()
    await asyncio.sleep(0.05)
    assert pool.idle_bytes == 0 and pool.allocated == 2


async def test_an_idle_pool_lets_its_windows_go() -> None:
    pool = WindowPool(idle_seconds=0.05)
    pool.give([pool.take(WINDOW), pool.take(WINDOW)])
    assert pool.idle_bytes == 2 * WINDOW
    await asyncio.sleep(0.2)
    assert pool.idle_bytes == 0


def test_idle_windows_are_bounded() -> None:
    pool = WindowPool(max_idle_bytes=3 * WINDOW)
    pool.give([bytearray(WINDOW) for _ in range(5)])
    assert pool.idle_bytes == 3 * WINDOW


def test_a_pooled_window_costs_less_than_a_fresh_one() -> None:
    """The figure behind the pool (printed, not asserted: the machine is shared)."""
    size, rounds = 8 * 1024 * KIB, 10
    started = time.perf_counter()
    for _ in range(rounds):
        fresh_buf = windows.new_buffer(size)
        fresh_buf[::4096] = b"x" * (size // 4096)
        del fresh_buf
    fresh = (time.perf_counter() - started) / rounds
    pool = WindowPool()
    started = time.perf_counter()
    for _ in range(rounds):
        buf = pool.take(size)
        buf[::4096] = b"x" * (size // 4096)
        pool.give([buf])
    pooled = (time.perf_counter() - started) / rounds
    print(f"8 MiB window: fresh {fresh * 1e3:.2f} ms, pooled {pooled * 1e3:.3f} ms")
    assert pool.allocated == 1


def test_the_idle_trim_works_in_a_later_event_loop() -> None:
    """One pool serves a process; a timer armed in an event loop that has
    ended never fires, so a later loop arms its own."""
    pool = WindowPool(idle_seconds=0.05)

    async def use_and_leave() -> None:
        pool.give([pool.take(WINDOW)])

    async def use_and_wait() -> None:
        pool.give([pool.take(WINDOW), pool.take(WINDOW)])
        await asyncio.sleep(0.2)

    asyncio.run(use_and_leave())  # its timer dies with its loop
    assert pool.idle_bytes == WINDOW
    asyncio.run(use_and_wait())
    assert pool.idle_bytes == 0


async def test_a_large_objects_windows_are_freed_not_pooled(
    tmp_path: Path, caches: list[IndexCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``POOL_OBJECT_LIMIT`` an object's windows are not kept: its
    manifest is built while they would sit idle (the peak RSS of a 4 GiB
    object). An object under the limit still gives its three back."""
    monkeypatch.setattr(windows, "POOL_OBJECT_LIMIT", 400 * KIB)
    origin, [small, large] = await _files(tmp_path, [300 * KIB, 500 * KIB])
    peer = FsBackend(tmp_path / "peer", "peer")
    writer = PackWriter("peer", peer, caches[0], 256 * KIB)
    pool = WindowPool()
    shipped = await _ship(origin, large, writer, pool)
    await writer.flush()
    assert pool.allocated == 3 and pool.idle_bytes == 0
    shipped_small = await _ship(origin, small, writer, pool)
    await writer.flush()
    assert pool.allocated == 6 and pool.idle_bytes == 3 * capacity(WINDOW)
    assert await _stored_correctly(peer, shipped, "peer")
    assert await _stored_correctly(peer, shipped_small, "peer")
