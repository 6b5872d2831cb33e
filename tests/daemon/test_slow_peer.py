"""A slow peer does not pace the daemon's other peers.

The service reads a version once for every lane that wants it. Before,
each window of that read waited until every lane's writer took it, so a
peer whose pack uploads were slow (a slow link, a long fsync) paced the
other peer's copy too: the fast peer's copy of an object was durable only
once the slow one had nearly all of it. Now the rule backfill had
(``ship.py``: a peer that is *behind* is left out of the read) applies to
lanes: the behind lane keeps the version wanted and reads it again alone,
while the others finish. In process with the real directory source, pack
writers and directory peers; one peer's pack publishes take a second each."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from replicator.config import ChunkingSettings, FsSourceSettings, ServiceSettings, StoreSettings
from replicator.metrics import Telemetry
from replicator.pipeline.lanes import Lane, open_lane
from replicator.pipeline.service import Service
from replicator.store.backends import FsBackend
from replicator.store.bulk import PutItem, PutOutcome
from replicator.store.format import StoreConfig
from replicator.store.peer import Peer
from replicator.store.spool import Spool
from tests.daemon.test_size_classes import Rig, WatchedSource, _save

MiB = 1024 * 1024
PACKS = 12  # the object's size in packs
WAIT = 120.0  # a liveness bound, not a timing assertion


class Disk(FsBackend):
    """A real directory peer; a slow one publishes each pack a second late.
    Signals each manifest batch it writes."""

    def __init__(self, root: Path, name: str, *, delay: float = 0.0) -> None:
        super().__init__(root, name)
        self.delay = delay
        self.wrote = asyncio.Event()

    async def put_spool(self, key: str, spool: Spool) -> None:
        await asyncio.sleep(self.delay)
        await super().put_spool(key, spool)  # type: ignore[arg-type]

    async def put_many_if_absent(self, items: Sequence[PutItem]) -> list[PutOutcome]:
        try:
            return await super().put_many_if_absent(items)
        finally:
            self.wrote.set()

    def packs(self) -> int:
        return sum(
            1 for p in (self.root / "packs").rglob("*") if p.is_file() and "tmp" not in p.name
        )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    params = ChunkingSettings().params()
    store = StoreSettings(pack_size=MiB, cache_dir=tmp_path / "cache", max_pack_delay=0.2)
    settings = ServiceSettings(max_in_flight=2, max_large_in_flight=1, large_object_size=MiB)
    (tmp_path / "src").mkdir()
    source = WatchedSource(FsSourceSettings(path=tmp_path / "src", bucket="b"))
    await source.start()
    lanes: list[Lane] = []
    for name, delay in (("fast", 0.0), ("slow", 1.0)):
        disk = Disk(tmp_path / name, name, delay=delay)
        peer = Peer(name, disk, StoreConfig(params), f"fs:{tmp_path / name}")
        lanes.append(await open_lane(peer, store, 5.0, large_object_size=MiB))
    service = Service(
        source,
        source.open,
        lanes,
        Telemetry(["fast", "slow"], {"fast": 60.0, "slow": 60.0}),
        settings,
        params=params,
        # Read windows smaller than a pack: whether a lane is behind is
        # decided per window, so a read spans many of them.
        window_size=256 * 1024,
        etag_is_digest=True,
        behind_seconds=0.5,  # the slow peer's 1 s publishes are behind
    )
    service.start()
    r = Rig(source, service, lanes)
    try:
        yield r
    finally:
        await r.close()


async def _manifest_written(disk: Disk, key: str) -> None:
    disk.wrote.clear()
    while not list((disk.root / "manifests").rglob(f"*{key}*/*")):
        await disk.wrote.wait()
        disk.wrote.clear()


async def test_a_slow_peer_does_not_pace_the_others_copy(rig: Rig, tmp_path: Path) -> None:
    src = tmp_path / "src"
    fast, slow = (lane.backend for lane in rig.lanes)
    assert isinstance(fast, Disk) and isinstance(slow, Disk)
    # A first object: the slow peer's pack writes are known to be slow.
    _save(src, "warm.bin", os.urandom(2 * MiB))
    await asyncio.wait_for(rig.source.until(["warm.bin"]), WAIT)
    before = slow.packs()
    _save(src, "big.bin", os.urandom(PACKS * MiB))
    await asyncio.wait_for(_manifest_written(fast, "big.bin"), WAIT)
    published = slow.packs() - before
    print(f"big.bin durable at 'fast' when 'slow' had published {published} of its {PACKS} packs")
    # Paced by the slow peer, the read (and so the fast peer's copy) could
    # not end before the slow peer published all but its last two packs.
    assert published <= PACKS // 2
    await asyncio.wait_for(rig.source.until(["big.bin"]), WAIT)
    assert slow.packs() - before >= PACKS
