"""Each peer has its own outcome and pace while an object is shipped: a peer
whose planning step fails drops out of the object and the others keep their
copy; a peer whose uploads are behind is left out of objects and catches up
on its own after the listing, instead of holding the others' read windows.

The failing peer is a real directory store whose disk answers EIO when the
pack writer reads its quarantine (as a dying disk or a server going away
between the start-up checks and the first object would). Before, that one
failure failed every object for every peer."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator.origins.fs import FsOrigin
from replicator.pipeline.backfill import Backfill
from replicator.store.backend import ObjectInfo, Payload
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_spool import FsSpool
from replicator.store.format import PACKS
from replicator.store.peer import close_peers, peer_on, store_config
from replicator.store.quarantine import QUARANTINE
from tests.integration.test_backfill import check_structure, settings_for, write_tree

pytestmark = pytest.mark.integration


class FailingDisk(FsBackend):
    """A real directory store whose reads under ``quarantine/`` fail with EIO."""

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        if prefix.startswith(QUARANTINE):
            raise OSError(errno.EIO, "Input/output error", str(self.root / prefix))
        async for info in super().list(prefix, start_after=start_after):
            yield info


async def test_a_peer_failing_while_planning_costs_the_others_nothing(tmp_path: Path) -> None:
    files = {f"ckpt/shard-{i:02d}.bin": os.urandom(50_000 + i) for i in range(12)}
    write_tree(tmp_path / "src", files)
    settings = settings_for(tmp_path, peers=2)
    wanted = store_config(settings)
    good = FsBackend(tmp_path / "peer0", "peer0")
    sick = FailingDisk(tmp_path / "peer1", "peer1")
    peers = [
        await peer_on("peer0", good, wanted, "test:good", create=True),
        await peer_on("peer1", sick, wanted, "test:sick", create=True),
    ]
    try:
        job = Backfill(
            FsOrigin(tmp_path / "src"), peers, settings.chunking.params(), settings.store
        )
        summary = await job.run()
    finally:
        await close_peers(peers)
    print(
        f"{summary.replicated} replicated, {summary.errors} errors, down: {summary.down}, "
        f"not sent to peer1: {summary.not_sent.get('peer1')}"
    )
    assert list(summary.down) == ["peer1"] and "Input/output error" in summary.down["peer1"]
    assert summary.replicated == len(files)
    assert await check_structure(FsBackend(tmp_path / "peer0", "peer0")) == files


class SlowDisk(FsBackend):
    """A real directory store whose pack writes take a second each (a slow
    link): its uploads fall behind the other peer's."""

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        if key.startswith(PACKS):
            await asyncio.sleep(1.0)
        await super().put(key, data, sha256=sha256)

    async def put_spool(self, key: str, spool: FsSpool) -> None:
        await asyncio.sleep(1.0)  # a pack spooled as it filled: its publish is slow
        await super().put_spool(key, spool)


async def test_a_slow_peer_catches_up_on_its_own_and_the_fast_one_is_not_held(
    tmp_path: Path,
) -> None:
    files = {f"data/part-{i:02d}.bin": os.urandom(300_000 + i) for i in range(24)}
    write_tree(tmp_path / "src", files)
    settings = settings_for(tmp_path, peers=2)
    wanted = store_config(settings)
    peers = [
        await peer_on("fast", FsBackend(tmp_path / "fast", "fast"), wanted, "t:f", create=True),
        await peer_on("slow", SlowDisk(tmp_path / "slow", "slow"), wanted, "t:s", create=True),
    ]
    started = time.monotonic()
    try:
        job = Backfill(
            FsOrigin(tmp_path / "src"),
            peers,
            settings.chunking.params(),
            settings.store,
            behind_seconds=0.3,  # the slow peer's 1 s pack writes are behind, the fast one's not
        )
        summary = await job.run()
    finally:
        await close_peers(peers)
    print(
        f"{len(files)} objects in {time.monotonic() - started:.1f} s; caught up after the "
        f"listing: {summary.caught_up}; packs {summary.packs}; source bytes read "
        f"{summary.source_bytes} for {sum(map(len, files.values()))} bytes of files"
    )
    assert summary.errors == 0, summary.error_samples
    assert summary.replicated == len(files)
    assert summary.caught_up.get("slow", 0) > 0 and "fast" not in summary.caught_up
    for name in ("fast", "slow"):
        assert await check_structure(FsBackend(tmp_path / name, name)) == files
