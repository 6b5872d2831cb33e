"""Large objects: packs spooled to a filesystem peer as they fill, and the
compact per-chunk bookkeeping an object keeps until its manifest is written."""

from __future__ import annotations

import asyncio
import json
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams, blake3_digest
from replicator.origins import ObjectVersion
from replicator.origins.fs import FsOrigin
from replicator.pipeline.counting import CountingBackend
from replicator.pipeline.durable import pack_names, resolve
from replicator.pipeline.manifests import placed_runs, runs_of
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.ship import ship
from replicator.store.backend import Backend, Payload
from replicator.store.backends import FsBackend
from replicator.store.backends.fs import TMP_PREFIX
from replicator.store.format import (
    ChunkRef,
    Manifest,
    PackIndex,
    PackRun,
    SourceIdentity,
    index_key,
    pack_key,
)
from replicator.store.index_cache import IndexCache
from replicator.store.placed import Placed
from replicator.store.retry import RetryingBackend
from tests.unit.test_packs import Batch

KIB = 1024


class Unspooled:
    """A real FsBackend seen through a wrapper without spools (as an S3 peer
    is): the pack writer must keep packs in memory."""

    def __init__(self, inner: FsBackend) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> object:
        if name in ("open_spool", "put_spool"):
            raise AttributeError(name)
        return getattr(self.inner, name)


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[IndexCache]:
    c = IndexCache(tmp_path / "cache.sqlite", b"cfg")
    await c.open()
    yield c
    await c.close()


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


async def _pack_of(backend: Backend, name: bytes) -> tuple[bytes, PackIndex]:
    data = await backend.get(pack_key(name))
    return data, PackIndex.from_bytes(await backend.get(index_key(name)))


async def test_pack_goes_to_the_peer_as_it_fills_not_into_memory(
    tmp_path: Path, cache: IndexCache
) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    peer = CountingBackend(RetryingBackend(fs))  # as a run wraps it
    writer = PackWriter("peer", peer, cache, pack_size=1024 * KIB)
    chunks = [os.urandom(n * KIB) for n in (10, 20, 30)]
    placed = await writer.place(Batch(chunks))
    # Before the seal: the bytes are already in a temporary file of the peer,
    # none in a pack buffer, and nothing is visible under a pack name.
    [tmp] = _temps(tmp_path / "peer")
    assert tmp.parent == tmp_path / "peer" / "packs"
    assert tmp.read_bytes() == b"".join(chunks)
    assert len(writer._open.buf) == 0, "no copy of the chunks in memory"
    assert not list((tmp_path / "peer" / "packs").glob("??/*"))

    await writer.flush()
    locs = await resolve(placed)
    data, index = await _pack_of(fs, locs[0].pack)
    assert blake3_digest(data) == locs[0].pack and data == b"".join(chunks)
    assert [(e.offset, e.length) for e in index.entries] == [
        (0, 10 * KIB),
        (10 * KIB, 20 * KIB),
        (30 * KIB, 30 * KIB),
    ]
    assert _temps(tmp_path / "peer") == []
    assert peer.counts["put"] == 2, "pack and index counted as a run's PUTs"
    print(f"spooled pack {locs[0].pack.hex()[:12]}: 60 KiB, 0 bytes buffered")


async def test_a_peer_without_spools_gets_the_same_pack_from_memory(
    tmp_path: Path, cache: IndexCache
) -> None:
    chunks = [os.urandom(n * KIB) for n in (10, 20, 30)]
    names = []
    for i, wrap in enumerate((lambda b: b, Unspooled)):
        fs = FsBackend(tmp_path / f"peer{i}", "peer")
        c = IndexCache(tmp_path / f"c{i}.sqlite", b"cfg")
        await c.open()
        writer = PackWriter("peer", wrap(fs), c, pack_size=1024 * KIB)
        placed = await writer.place(Batch(chunks))
        await writer.flush()
        names.append((await resolve(placed))[0].pack)
        await c.close()
    assert names[0] == names[1], "same bytes, same pack name, whichever way it was written"


async def test_packs_seal_in_turn_while_spooled(tmp_path: Path, cache: IndexCache) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    writer = PackWriter("peer", fs, cache, pack_size=64 * KIB)
    chunks = [os.urandom(40 * KIB) for _ in range(7)]
    placed = []
    for c in chunks:
        placed += await writer.place(Batch([c]))
    await writer.flush()
    locs = await resolve(placed)
    assert writer.stats.packs == 4
    for loc, c in zip(locs, chunks, strict=True):
        data, _ = await _pack_of(fs, loc.pack)
        assert data[loc.offset : loc.offset + loc.length] == c
    assert _temps(tmp_path / "peer") == []


async def test_compact_placements_give_the_runs_records_give(
    tmp_path: Path, cache: IndexCache
) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    old = os.urandom(12 * KIB)
    first = PackWriter("peer", fs, cache, pack_size=64 * KIB)
    await first.place(Batch([old]))
    await first.flush()
    # A new run: one chunk found stored, repeats, compression, three packs.
    writer = PackWriter("peer", fs, cache, pack_size=64 * KIB, compression="zstd")
    text = b"words again and again " * 2000
    chunks = [os.urandom(40 * KIB), old, text, os.urandom(40 * KIB), text, os.urandom(30 * KIB)]
    batch = Batch(chunks)
    placed = Placed()
    for start in (0, 3):  # two windows of one object
        part = Batch(chunks[start : start + 3])
        await asyncio.gather(*(await writer.place_into(part, placed)))
    await writer.flush()
    digests = b"".join(batch.digest(i) for i in range(len(chunks)))
    records = list(placed.placements())
    assert [p.new for p in records] == [True, False, True, True, False, True]
    assert placed_runs(digests, placed, await pack_names(placed)) == runs_of(
        digests, await resolve(records)
    )
    assert len(placed.packs) >= 3


async def test_bookkeeping_of_a_shipped_object_is_a_few_bytes_per_chunk(
    tmp_path: Path, cache: IndexCache
) -> None:
    """What an object holds until its manifest is written, per chunk: with a
    Placement object per chunk ~190 bytes; with the arrays ~60 (36 of them
    the digest, which the manifest needs)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(8 * 1024 * KIB))
    st = os.stat(src / "big")
    obj = ObjectVersion("big", st.st_size, st.st_ctime_ns, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
    await asyncio.sleep(0.05)  # past the racy-clean window of the file's ctime
    params = ChunkerParams(256, 1024, 4096)  # many chunks from a small object
    writer = PackWriter("peer", FsBackend(tmp_path / "peer", "peer"), cache, 256 * KIB)
    origin = FsOrigin(src)
    reader = await origin.open(obj)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        shipped = await ship(reader, params, 256 * KIB, [writer])
        await writer.flush()  # the writer's own per-pack entries go with the pack
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        await reader.close()
    placed = shipped.placements["peer"]
    ours = [tracemalloc.Filter(True, "*/replicator/*")]  # not pytest's, not asyncio's
    diff = after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    held = sum(s.size_diff for s in diff if s.size_diff > 0)
    per_chunk = held / len(placed)
    print(f"{len(placed)} chunks: {held:,} bytes held after ship, {per_chunk:.1f} per chunk")
    assert len(placed) > 4000
    assert per_chunk < 100, "no Python object per chunk (32 of the bytes are the digest)"


def _reference_bytes(m: Manifest) -> bytes:
    """The manifest's JSON as ``json.dumps`` writes it (the format's definition)."""
    c = m.chunker
    runs = []
    for r in m.runs:
        chunks: list[list[object]] = [
            [ch.digest.hex(), ch.length]
            if ch.compression == "none"
            else [ch.digest.hex(), ch.length, ch.stored_length, ch.compression]
            for ch in r.chunks
        ]
        runs.append({"pack": r.pack.hex(), "offset": r.offset, "chunks": chunks})
    d = {
        "version": m.format_version,
        "kind": "removed" if m.removed else "created",
        "object": m.identity.to_json(m.format_version),
        "digest": m.digest.hex(),
        "chunker": [c.min_size, c.avg_size, c.max_size, c.normalization, c.seed],
        "runs": runs,
    }
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


_refs = st.builds(
    ChunkRef,
    st.binary(min_size=32, max_size=32),
    st.integers(0, 1 << 20),
    st.integers(0, 1 << 20),
    st.sampled_from(["none", "zstd"]),
)
_runs = st.lists(
    st.builds(
        PackRun,
        st.binary(min_size=32, max_size=32),
        st.integers(0, 1 << 40),
        st.lists(_refs, max_size=5).map(tuple),
    ),
    max_size=4,
).map(tuple)


@given(_runs, st.booleans(), st.sampled_from([1, 2]), st.text(max_size=8))
def test_manifest_bytes_are_those_json_dumps_writes(
    runs: tuple[PackRun, ...], removed: bool, fmt: int, key: str
) -> None:
    ident = SourceIdentity("fs", "b", "k" + key, "", "e", 3, 1_700_000_000_000_000_000, inode=5)
    m = Manifest(ident, removed, b"\x07" * 32, ChunkerParams(), runs, format_version=fmt)
    assert m.to_bytes() == _reference_bytes(m)


class GatedPuts(FsBackend):
    """Pack PUTs (the in-memory path) wait for ``gate``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "peer")
        self.gate = asyncio.Event()

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        if key.startswith("packs/"):
            await self.gate.wait()
        await super().put(key, data, sha256=sha256)


async def test_packs_in_memory_stay_one_in_flight(tmp_path: Path, cache: IndexCache) -> None:
    peer = GatedPuts(tmp_path / "peer")
    writer = PackWriter("peer", Unspooled(peer), cache, pack_size=16 * KIB)  # type: ignore[arg-type]
    [pa] = await writer.place(Batch([os.urandom(20 * KIB)]))  # sealed, its PUT waits
    second = asyncio.create_task(writer.place(Batch([os.urandom(20 * KIB)])))
    await asyncio.sleep(0.05)
    assert not second.done(), "two packs in memory at most: the open one and one written"
    peer.gate.set()
    [pb] = await second
    await writer.flush()
    la, lb = await resolve([pa, pb])
    assert la.pack != lb.pack and writer.stats.packs == 2


async def test_a_killed_writers_spooled_pack_is_swept_a_live_one_is_not(tmp_path: Path) -> None:
    """Spooled packs start in packs/ itself, not in a packs/<hh>/ directory:
    the start-up sweep covers it, and skips a spool its writer still holds."""
    fs = FsBackend(tmp_path / "peer", "peer")
    live = await fs.open_spool("packs")
    live.write([b"still being written"])
    dead = tmp_path / "peer" / "packs" / f"{TMP_PREFIX}0123456789abcdef"
    dead.write_bytes(b"left by a killed writer")
    old = time.time() - 3600
    os.utime(dead, (old, old))
    [held] = [p for p in _temps(tmp_path / "peer") if p != dead]
    os.utime(held, (old, old))
    await fs.probe()  # what opening a peer for writing runs: the sweep of packs/
    assert not dead.exists()
    assert held.exists(), "a live writer's spool is never swept"
    live.discard()
    assert _temps(tmp_path / "peer") == []
