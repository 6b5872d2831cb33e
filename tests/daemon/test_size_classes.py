"""The service's size classes and group commit, in process with the real
directory source, pack writers and directory peers.

A peer whose upload of a large object's packs is held (a slow link, a big
fsync) must not hold back a small object changed meanwhile: it has its own
workers and its own pack writer. Small objects released together by one
pack become durable through batched manifest writes (group commit)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from replicator.config import ChunkingSettings, FsSourceSettings, ServiceSettings, StoreSettings
from replicator.events import ChangeEvent
from replicator.metrics import Telemetry
from replicator.origins.fs import FsOrigin
from replicator.pipeline.lanes import Lane, open_lane
from replicator.pipeline.service import Service
from replicator.sources import Outcome
from replicator.sources.fswatch import DirectorySource
from replicator.store.backend import Payload
from replicator.store.backends import FsBackend
from replicator.store.bulk import PutItem, PutOutcome
from replicator.store.format import StoreConfig
from replicator.store.peer import Peer
from replicator.store.spool import Spool

MiB = 1024 * 1024
#: A pack at least this big is a large object's: its upload waits for the gate.
GATED_PACK = 512 * 1024
WAIT = 60.0  # a liveness bound, not a timing assertion


class GatedBackend:
    """A real directory peer whose large pack uploads wait for ``gate``
    (a slow link), and which counts the manifest batches it writes."""

    def __init__(self, inner: FsBackend) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.held = asyncio.Event()  # a large pack upload is waiting
        self.batches: list[int] = []

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        if key.startswith("packs/") and memoryview(data).nbytes >= GATED_PACK:
            self.held.set()
            await self.gate.wait()
        await self.inner.put(key, data, sha256=sha256)

    async def put_spool(self, key: str, spool: Spool) -> None:
        """A pack spooled to the peer as it filled: its publish is the upload."""
        if spool.size >= GATED_PACK:
            self.held.set()
            await self.gate.wait()
        await self.inner.put_spool(key, spool)  # type: ignore[arg-type]

    async def put_many_if_absent(self, items: Sequence[PutItem]) -> list[PutOutcome]:
        self.batches.append(len(items))
        return await self.inner.put_many_if_absent(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WatchedSource(DirectorySource):
    """The directory source, noting each key's outcome as the service reports it."""

    def __init__(self, settings: FsSourceSettings) -> None:
        super().__init__(settings)
        self.outcomes: dict[str, Outcome] = {}
        self.changed = asyncio.Event()

    async def done(self, event: ChangeEvent, outcome: Outcome) -> None:
        self.outcomes[event.key] = outcome
        self.changed.set()
        await super().done(event, outcome)

    async def until(self, keys: Sequence[str]) -> None:
        while not all(self.outcomes.get(k) is Outcome.DURABLE for k in keys):
            self.changed.clear()
            await self.changed.wait()


@dataclass
class Rig:
    source: WatchedSource
    service: Service
    lanes: list[Lane]
    peers: list[GatedBackend] = field(default_factory=list)

    async def close(self) -> None:
        for p in self.peers:
            p.gate.set()
        await self.service.drain(10.0)
        await self.source.close()
        for lane in self.lanes:
            await lane.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    params = ChunkingSettings().params()
    store = StoreSettings(pack_size=MiB, cache_dir=tmp_path / "cache", max_pack_delay=0.2)
    settings = ServiceSettings(max_in_flight=2, max_large_in_flight=1, large_object_size=MiB)
    (tmp_path / "src").mkdir()
    source = WatchedSource(FsSourceSettings(path=tmp_path / "src", bucket="b"))
    await source.start()
    lanes, gated = [], []
    for name in ("a", "b"):
        backend = GatedBackend(FsBackend(tmp_path / name, name))
        peer = Peer(name, backend, StoreConfig(params), f"fs:{tmp_path / name}")
        lanes.append(await open_lane(peer, store, 5.0, large_object_size=MiB))
        gated.append(backend)
    telemetry = Telemetry(["a", "b"], {"a": 60.0, "b": 60.0})
    service = Service(
        source,
        source.open,
        lanes,
        telemetry,
        settings,
        params=params,
        window_size=FsOrigin.window_size,
        etag_is_digest=True,
    )
    service.start()
    r = Rig(source, service, lanes, gated)
    try:
        yield r
    finally:
        await r.close()


def _save(root: Path, key: str, data: bytes) -> None:
    """Temp file, then rename: how trainers save, one event for the key."""
    tmp = root / (key + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, root / key)


async def test_small_object_is_not_held_behind_a_large_ones_packs(rig: Rig, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _save(src, "large.bin", os.urandom(4 * MiB))  # four packs' worth
    await asyncio.wait_for(asyncio.gather(*(p.held.wait() for p in rig.peers)), WAIT)
    _save(src, "small.bin", os.urandom(10_000))
    await asyncio.wait_for(rig.source.until(["small.bin"]), WAIT)
    # The large object's packs are still held at both peers: it is not durable.
    assert "large.bin" not in rig.source.outcomes
    print(f"small durable while the large object's pack uploads wait: {rig.source.outcomes}")
    for p in rig.peers:
        p.gate.set()
    await asyncio.wait_for(rig.source.until(["large.bin"]), WAIT)


async def test_small_objects_share_manifest_syncs(rig: Rig, tmp_path: Path) -> None:
    src = tmp_path / "src"
    keys = [f"f{i:03d}" for i in range(40)]
    for k in keys:
        _save(src, k, os.urandom(3000))
    await asyncio.wait_for(rig.source.until(keys), WAIT)
    for p in rig.peers:
        print(f"{p.inner.name}: {len(keys)} manifests in {len(p.batches)} batches {p.batches}")
        assert sum(p.batches) == len(keys)
        assert len(p.batches) < len(keys) // 2
