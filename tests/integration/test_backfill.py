"""Backfill from a local tree to real filesystem peers, checked structurally.

Every check reads the peers back through the store format only (manifest ->
pack runs -> bytes), independently of the writer, and compares with the
source files byte for byte. PUTs are counted by a wrapper around the real
backend, outside the code under test.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
import zstandard

from replicator._native import blake3_digest
from replicator.config import (
    ChunkingSettings,
    FsDestinationSettings,
    FsSourceSettings,
    Settings,
    StoreSettings,
)
from replicator.origins import ObjectVersion
from replicator.origins.fs import FsOrigin, FsReader
from replicator.pipeline.backfill import Backfill, run_backfill
from replicator.pipeline.summary import BackfillSummary
from replicator.store.backend import Backend, Capabilities, ObjectInfo, Payload
from replicator.store.backends import FsBackend
from replicator.store.format import (
    INDEX,
    PACKS,
    Manifest,
    PackIndex,
    index_key,
    pack_key,
)
from replicator.store.peer import (
    close_peers,
    make_backend,
    open_peers,
    peer_identity,
    peer_on,
    store_config,
)
from tests.integration.peer_reader import manifests_by_key

MIB = 1024 * 1024
CHUNKING = ChunkingSettings(min_size=4096, avg_size=16384, max_size=65536)


class PutCounter:
    """Counts the writes reaching a real backend (the test's own counter)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.puts: Counter[str] = Counter()
        #: Requests of the start-up probe (its own test objects, written and
        #: removed below put()): counted apart from ``puts``.
        self.probe_requests = 0

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        self.puts[key.split("/", 1)[0]] += 1
        await self.inner.put(key, data, sha256=sha256)

    async def put_if_absent(self, key: str, data: Payload, *, sha256: bytes | None = None) -> bool:
        self.puts[key.split("/", 1)[0]] += 1
        return await self.inner.put_if_absent(key, data, sha256=sha256)

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return await self.inner.get(key, start, length)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.inner.head(key)

    def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix, start_after=start_after)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def probe(self) -> Capabilities:
        base: Any = self.inner
        while hasattr(base, "inner"):  # through the retry wrapper
            base = base.inner
        # Every probe request of the S3 backend goes through _call; the fs
        # backend's probe writes each test file through _write.
        name = "_call" if hasattr(base, "_call") else "_write"
        original = getattr(base, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.probe_requests += 1
            return original(*args, **kwargs)

        setattr(base, name, counted)
        try:
            return await self.inner.probe()
        finally:
            delattr(base, name)

    async def close(self) -> None:
        await self.inner.close()


async def fs_probe_requests(root: Path) -> int:
    """How many requests the start-up probe of a filesystem peer makes (the
    run summaries' put_requests leave them out)."""
    counter = PutCounter(FsBackend(root, "probe-count"))
    await counter.probe()
    return counter.probe_requests


def settings_for(
    tmp: Path, peers: int = 2, concurrency: int = 4, format_version: Literal[2, 3] = 3
) -> Settings:
    return Settings(
        source=FsSourceSettings(path=tmp / "src"),
        destinations=[
            FsDestinationSettings(name=f"peer{i}", path=tmp / f"peer{i}") for i in range(peers)
        ],
        chunking=CHUNKING,
        # Removals in these small trees are deliberate; test_safety covers the guard.
        store=StoreSettings(
            pack_size=MIB,
            cache_dir=tmp / "cache",
            concurrency=concurrency,
            max_delete_fraction=1.0,
            format_version=format_version,
        ),
    )


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


async def manifests_at(backend: Backend) -> dict[str, list[Manifest]]:
    """Every manifest at a peer (format 2 objects or format 3 segments), by
    object key, oldest first: read by the independent reader of peer_reader."""
    return await manifests_by_key(backend)


async def check_structure(backend: Backend) -> dict[str, bytes]:
    """No manifest names a missing pack/index or chunk; the newest bytes per key.

    Tombstoned keys map to None-free absence: only live keys are returned."""
    packs = {i.key async for i in backend.list(PACKS)}
    indexes = {i.key async for i in backend.list(INDEX)}
    live: dict[str, bytes] = {}
    for key, versions in (await manifests_at(backend)).items():
        for m in versions:
            for p in m.packs():
                assert pack_key(p) in packs, f"{key!r} names missing pack {p.hex()}"
                assert index_key(p) in indexes, f"{key!r} names a pack without index"
        newest = versions[-1]
        if newest.removed:
            continue
        data = await rebuild(backend, newest)
        assert blake3_digest(data) == newest.digest
        live[key] = data
    return live


async def rebuild(backend: Backend, m: Manifest) -> bytes:
    parts: list[bytes] = []
    for run in m.runs:
        blob = await backend.get(pack_key(run.pack), run.offset, run.stored_length)
        pos = 0
        for c in run.chunks:
            piece = blob[pos : pos + c.stored_length]
            if c.compression == "zstd":
                piece = zstandard.ZstdDecompressor().decompress(piece, max_output_size=c.length)
            assert blake3_digest(piece) == c.digest
            parts.append(piece)
            pos += c.stored_length
    return b"".join(parts)


async def pack_index_sizes(backend: Backend) -> int:
    total = 0
    async for info in backend.list(INDEX):
        total += PackIndex.from_bytes(await backend.get(info.key)).size
    return total


async def counted_backfill(
    settings: Settings, prefix: str = "", waiting: int = 256
) -> tuple[BackfillSummary, list[PutCounter]]:
    # The counters wrap the backends before the peers are opened, so the
    # start-up probe's requests are counted too (in probe_requests).
    counters = [PutCounter(make_backend(d)) for d in settings.destinations]
    wanted = store_config(settings)
    peers = [
        await peer_on(d.name, c, wanted, peer_identity(d), create=True)
        for d, c in zip(settings.destinations, counters, strict=True)
    ]
    try:
        origin = FsOrigin(settings.source.path)  # type: ignore[union-attr]
        params = settings.chunking.params()
        job = Backfill(origin, peers, params, settings.store, waiting_manifests=waiting)
        return await job.run(prefix), counters
    finally:
        await close_peers(peers)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, bytes]:
    base = os.urandom(3 * MIB)
    files = {
        "ckpt/step1/model.safetensors": base,
        "ckpt/step2/model.safetensors": base,  # identical: shipped once
        "data/shard-000.jsonl": os.urandom(700_000),
        "data/empty": b"",
        "tokenizer/config json+é.txt": b'{"vocab": 32000}\n',
    }
    write_tree(tmp_path / "src", files)
    return files


async def test_backfill_replicates_every_object_to_every_peer(
    tmp_path: Path, tree: dict[str, bytes]
) -> None:
    settings = settings_for(tmp_path, format_version=2)  # counts manifests/ PUTs (format 2)
    summary, counters = await counted_backfill(settings)
    total = sum(len(v) for v in tree.values())
    unique = total - 3 * MIB
    assert (summary.objects, summary.replicated, summary.errors) == (5, 5, 0)
    assert summary.source_bytes == total
    for c in counters:
        live = await check_structure(c.inner)
        assert live == tree
        assert summary.shipped_bytes[c.name] == unique
        assert summary.deduplicated_bytes[c.name] == 3 * MIB
        assert await pack_index_sizes(c.inner) == unique, "each chunk stored once"
        assert c.puts["manifests"] == 5
        assert c.puts["packs"] == c.puts["index"] == summary.packs[c.name]
        # The store config is written while the peer is opened, before the
        # pipeline's own request counting starts.
        assert c.puts["config"] == 1
        assert summary.put_requests[c.name] == sum(c.puts.values()) - c.puts["config"]
    print(
        f"backfill: {summary.objects} objects, {total} source bytes, shipped "
        f"{summary.shipped_bytes} deduplicated {summary.deduplicated_bytes}, "
        f"PUTs {[dict(c.puts) for c in counters]}"
    )


async def test_replay_puts_nothing_and_keeps_manifest_bytes(
    tmp_path: Path, tree: dict[str, bytes]
) -> None:
    settings = settings_for(tmp_path)
    await counted_backfill(settings)
    before = {p: sorted((tmp_path / p).rglob("*")) for p in ("peer0", "peer1")}
    snapshot = {f: f.read_bytes() for files in before.values() for f in files if f.is_file()}
    summary, counters = await counted_backfill(settings)
    assert [sum(c.puts.values()) for c in counters] == [0, 0]
    assert summary.unchanged == 5 and summary.source_bytes == 0
    assert summary.shipped_bytes == {"peer0": 0, "peer1": 0}
    after = {p: sorted((tmp_path / p).rglob("*")) for p in ("peer0", "peer1")}
    assert after == before
    assert {f: f.read_bytes() for f in snapshot} == snapshot
    probe = [c.probe_requests for c in counters]
    assert all(n > 0 for n in probe)  # the probe ran, and is counted apart
    print(
        f"replay: {summary.objects} objects unchanged, 0 PUTs besides the start-up probe's "
        f"{probe} requests per peer (test objects written and removed), "
        f"{len(snapshot)} files identical"
    )


async def test_replay_with_lost_cache_reads_but_ships_nothing(
    tmp_path: Path, tree: dict[str, bytes]
) -> None:
    """A rebuilt cache (from index/) still finds every chunk; only the mtime
    check is defeated here by a touched file, so it is read and deduplicated."""
    settings = settings_for(tmp_path, format_version=2)  # counts manifests/ PUTs (format 2)
    await counted_backfill(settings)
    for f in (tmp_path / "cache").iterdir():
        f.unlink()
    path = tmp_path / "src" / "data/shard-000.jsonl"
    os.utime(path, ns=(1, 1_000_000_000))
    summary, counters = await counted_backfill(settings)
    assert summary.replicated == 1 and summary.unchanged == 4
    assert summary.shipped_bytes == {"peer0": 0, "peer1": 0}
    assert summary.deduplicated_bytes == {"peer0": 700_000, "peer1": 700_000}
    assert [dict(c.puts) for c in counters] == [{"manifests": 1}] * 2


async def test_changed_middle_ships_only_the_changed_chunks(tmp_path: Path) -> None:
    data = bytearray(os.urandom(8 * MIB))
    write_tree(tmp_path / "src", {"ckpt.pt": bytes(data), "other.bin": os.urandom(MIB)})
    settings = settings_for(tmp_path, format_version=2)  # counts manifests/ PUTs (format 2)
    await counted_backfill(settings)
    data[4 * MIB : 4 * MIB + 100] = os.urandom(100)
    write_tree(tmp_path / "src", {"ckpt.pt": bytes(data)})
    summary, counters = await counted_backfill(settings)
    assert (summary.replicated, summary.unchanged) == (1, 1)
    for c in counters:
        shipped = summary.shipped_bytes[c.name]
        # An edit touches one chunk, or two when it straddles a cut point.
        assert 0 < shipped <= 2 * CHUNKING.max_size
        assert summary.deduplicated_bytes[c.name] == 8 * MIB - shipped
        assert dict(c.puts) == {"packs": 1, "index": 1, "manifests": 1}
        live = await check_structure(c.inner)
        assert live["ckpt.pt"] == bytes(data)
        versions = (await manifests_at(c.inner))["ckpt.pt"]
        assert len(versions) == 2, "the old version stays restorable"
    print(f"100-byte edit in 8 MiB: shipped {summary.shipped_bytes} bytes")


async def test_removed_keys_get_one_tombstone(tmp_path: Path, tree: dict[str, bytes]) -> None:
    settings = settings_for(tmp_path, format_version=2)  # counts manifests/ PUTs (format 2)
    await counted_backfill(settings)
    (tmp_path / "src" / "data/shard-000.jsonl").unlink()
    summary, counters = await counted_backfill(settings)
    assert summary.removed == 2  # one per peer
    for c in counters:
        assert dict(c.puts) == {"manifests": 1}
        versions = (await manifests_at(c.inner))["data/shard-000.jsonl"]
        assert [m.removed for m in versions] == [False, True]
        assert versions[1].identity.event_time_ns > versions[0].identity.event_time_ns
        live = await check_structure(c.inner)
        assert set(live) == set(tree) - {"data/shard-000.jsonl"}
    again, counters = await counted_backfill(settings)
    assert again.removed == 0 and [sum(c.puts.values()) for c in counters] == [0, 0]


async def test_prefix_limits_objects_and_tombstones(tmp_path: Path, tree: dict[str, bytes]) -> None:
    settings = settings_for(tmp_path, peers=1)
    summary, _ = await counted_backfill(settings, prefix="ckpt/")
    assert summary.objects == 2
    summary, _ = await counted_backfill(settings, prefix="data/")
    assert (summary.objects, summary.removed) == (2, 0), "ckpt/ is outside the prefix"
    live = await check_structure((await open_peers(settings, create=False))[0].backend)
    assert set(live) == {k for k in tree if k.startswith(("ckpt/", "data/"))}


async def test_many_small_objects_share_packs(tmp_path: Path) -> None:
    files = {f"small/{i:04d}": os.urandom(1000 + i) for i in range(300)}
    write_tree(tmp_path / "src", files)
    settings = settings_for(tmp_path, peers=1, concurrency=8)
    summary, [counter] = await counted_backfill(settings)
    assert summary.replicated == 300
    assert await check_structure(counter.inner) == files
    # Packs are shared, not one per object (300 here): batches of up to 128
    # objects go into one open pack until the waiting-manifest budget (256)
    # seals it, 1-2 packs on a quiet machine. Once the listing has ended, a
    # commit waiting on the open pack seals it within FINISH_SEAL_SECONDS, so
    # on a loaded machine, where batches come further apart, a few more are
    # sealed (4 in one CI run): the bound is on sharing, not on the timing.
    assert counter.puts["packs"] <= 10
    print(f"300 small objects: {counter.puts['packs']} packs, {sum(counter.puts.values())} PUTs")


async def test_run_backfill_opens_and_creates_the_stores(
    tmp_path: Path, tree: dict[str, bytes]
) -> None:
    settings = settings_for(tmp_path, format_version=2)  # counts manifests/ PUTs (format 2)
    summary = await run_backfill(settings)
    assert summary.replicated == 5
    assert summary.put_requests["peer0"] == 5 + 2 * summary.packs["peer0"]
    assert (tmp_path / "peer0" / "config").exists()


async def test_tiny_waiting_budget_seals_early_and_never_deadlocks(tmp_path: Path) -> None:
    """More readers (8) than manifests allowed to wait (2), two peers: every
    object must still complete, in more and smaller packs."""
    shared = os.urandom(5000)
    files = {f"s/{i:03d}": os.urandom(3000) + shared for i in range(120)}
    write_tree(tmp_path / "src", files)
    settings = settings_for(tmp_path, peers=2, concurrency=8)
    summary, counters = await counted_backfill(settings, waiting=2)
    assert (summary.replicated, summary.errors) == (120, 0)
    for c in counters:
        assert await check_structure(c.inner) == files
        assert c.puts["packs"] > 3, "sealed by the budget, not by size"
    print(f"120 objects, budget 2: {[c.puts['packs'] for c in counters]} packs per peer")


async def test_non_utf8_file_name_is_replicated_exactly(tmp_path: Path) -> None:
    files = {f"ok/{i}": os.urandom(5000) for i in range(3)}
    write_tree(tmp_path / "src", files)
    name = os.fsdecode(b"bad-\xff")  # a lone surrogate; the file system gets 0xFF
    (tmp_path / "src" / name).write_bytes(b"bytes of a file whose name is not UTF-8")
    assert os.fsencode(name) in os.listdir(os.fsencode(tmp_path / "src"))
    summary, [counter] = await counted_backfill(settings_for(tmp_path, peers=1))
    assert (summary.objects, summary.replicated, summary.errors) == (4, 4, 0)
    live = await check_structure(counter.inner)
    assert live[name] == b"bytes of a file whose name is not UTF-8"


class FailingOrigin(FsOrigin):
    """A real FsOrigin whose open() fails unexpectedly for one key (a bug, a
    driver fault): the run must report it and go on."""

    async def open(self, obj: ObjectVersion) -> FsReader:
        if obj.key == "ok/1":
            raise RuntimeError("unexpected failure")
        return await super().open(obj)

    async def read_many(self, objs: Sequence[ObjectVersion]) -> list[bytes | None]:
        # The batch holding it fails as a whole: each object is retried alone.
        if any(o.key == "ok/1" for o in objs):
            raise RuntimeError("unexpected failure")
        return await super().read_many(objs)


async def test_an_unexpected_failure_is_one_error_not_a_stop(tmp_path: Path) -> None:
    files = {f"ok/{i}": os.urandom(5000) for i in range(5)}
    write_tree(tmp_path / "src", files)
    settings = settings_for(tmp_path, peers=1, concurrency=1)
    peers = await open_peers(settings, create=True)
    job = Backfill(FailingOrigin(tmp_path / "src"), peers, CHUNKING.params(), settings.store)
    summary = await job.run()
    await close_peers(peers)
    assert (summary.objects, summary.replicated, summary.errors) == (5, 4, 1)
    assert summary.error_samples == ["'ok/1': RuntimeError: unexpected failure"]


class CountingOrigin(FsOrigin):
    """A real FsOrigin that counts batched and single reads (pipeline/small.py)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.batches: list[int] = []
        self.opened = 0

    async def read_many(self, objs: Sequence[ObjectVersion]) -> list[bytes | None]:
        self.batches.append(len(objs))
        return await super().read_many(objs)

    async def open(self, obj: ObjectVersion) -> FsReader:
        self.opened += 1
        return await super().open(obj)


async def test_small_files_are_read_in_batches_and_restore_exactly(tmp_path: Path) -> None:
    """Small files go through read_many in a few batches; a file above the
    small-object size, and only it, is opened and read in windows."""
    src = tmp_path / "src"
    files = {f"d{i % 3}/f{i:03d}": os.urandom(1 + 97 * i) for i in range(150)}
    files["big"] = os.urandom(300_000)  # above the small-object size: windowed
    for key, data in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy window: every small file can be batched
    settings = settings_for(tmp_path, peers=2, concurrency=2)
    origin = CountingOrigin(src)
    peers = await open_peers(settings, create=True)
    try:
        job = Backfill(origin, peers, settings.chunking.params(), settings.store)
        summary = await job.run()
    finally:
        await close_peers(peers)
    assert (summary.replicated, summary.errors) == (151, 0)
    assert sum(origin.batches) == 150 and len(origin.batches) < 10
    assert origin.opened == 1  # only the large file went the windowed way
    for peer in peers:
        assert await check_structure(peer.backend) == files


async def test_batches_racing_for_a_small_waiting_budget_never_deadlock(tmp_path: Path) -> None:
    """Eight readers whose batches of small files each need several of the
    seven waiting places: a batch takes its places all at once, so no two
    readers can each hold part of what they need (that hung before)."""
    files = {f"d{i % 5}/f{i:03d}": os.urandom(200 + i) for i in range(300)}
    write_tree(tmp_path / "src", files)
    await asyncio.sleep(0.05)  # past the racy window: all of them batched
    settings = settings_for(tmp_path, peers=2, concurrency=8)
    # A hang fails here instead of stalling the suite.
    summary, counters = await asyncio.wait_for(counted_backfill(settings, waiting=7), 300)
    assert (summary.replicated, summary.errors) == (300, 0)
    for c in counters:
        assert await check_structure(c.inner) == files
