"""An update of a large object is cut with its previous version's chunks as
hints (native/src/hints.rs, pipeline/ship.py ``previous_chunks``): a run that
hashes to the old chunk at the same start is not scanned again. The cuts,
digests and whole digest are exactly those of cutting without hints."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from replicator import config
from replicator._native import ChunkerParams, ChunkList, StreamChunker, chunk_buffer
from replicator.events import ChangeEvent, Kind
from replicator.pipeline import ship, windows
from replicator.pipeline.backfill import run_backfill
from replicator.pipeline.ship import PreviousVersion, previous_of
from replicator.store.backends import FsBackend
from tests.integration.peer_reader import manifests_by_key

KIB, MIB = 1024, 1024 * 1024
SMALL = ChunkerParams(1024, 4096, 16384)


def _chunks(cl: ChunkList) -> list[tuple[int, int, bytes]]:
    offsets = memoryview(cl.offsets).cast("Q")
    lengths = memoryview(cl.lengths).cast("I")
    d = cl.digests
    return [(offsets[i], lengths[i], d[32 * i : 32 * i + 32]) for i in range(len(lengths))]


def _edited(rng: random.Random, old: bytes) -> bytes:
    """A run replaced, bytes inserted, bytes appended."""
    n = len(old) // 16
    at = rng.randrange(len(old) - n)
    new = old[:at] + rng.randbytes(n) + old[at + n :]
    ins = rng.randrange(len(new))
    return new[:ins] + rng.randbytes(n // 2) + new[ins:] + rng.randbytes(n // 3)


def _stream(data: bytes, piece: int, previous: Any) -> tuple[list[Any], bytes | None]:
    s = StreamChunker(SMALL, threads=2, previous=previous)
    out = []
    for i in range(0, len(data), piece):
        out += _chunks(s.feed(data[i : i + piece]))
    last = s.finish()
    return out + _chunks(last), last.digest


def test_a_stream_cut_with_hints_cuts_alike() -> None:
    rng = random.Random(3)
    old = rng.randbytes(900 * KIB)
    new = _edited(rng, old)
    want = chunk_buffer(new, SMALL)
    before = chunk_buffer(old, SMALL)
    previous = (list(memoryview(before.lengths).cast("I")), before.digests)
    unrelated = chunk_buffer(rng.randbytes(len(old)), SMALL)
    others = (list(memoryview(unrelated.lengths).cast("I")), unrelated.digests)
    for hints in (previous, others, None):
        for piece in (20 * KIB + 1, 64 * KIB, 300 * KIB):
            assert _stream(new, piece, hints) == (_chunks(want), want.digest)
    with pytest.raises(ValueError, match="32 bytes"):
        StreamChunker(SMALL, previous=([4096, 4096], b"x" * 32))


def test_previous_of_reads_only_a_created_manifest_of_the_same_chunker() -> None:
    text = (
        b'{"chunker":[1024,4096,16384,1,0],"digest":"0f","kind":"created","object":{},'
        b'"runs":[{"chunks":[["'
        + b"ab" * 32
        + b'",5000],["'
        + b"cd" * 32
        + b'",7000,7000,"zstd"]],'
        b'"offset":0,"pack":"00"}],"version":3}'
    )
    chunks = ([5000, 7000], b"\xab" * 32 + b"\xcd" * 32)
    assert previous_of(text, SMALL) == PreviousVersion(chunks, b"\x0f")
    assert previous_of(text, ChunkerParams()) is None  # other parameters
    assert previous_of(text.replace(b'"created"', b'"removed"'), SMALL) is None
    assert previous_of(text.replace(b'"0f"', b'"0g"'), SMALL) is None  # not hex
    assert previous_of(b"not json", SMALL) is None


class Recording:
    """The native stream chunker, noting the hints each object was cut with."""

    given: ClassVar[list[Any]] = []
    trees: ClassVar[list[Any]] = []
    made: ClassVar[list[StreamChunker]] = []

    def __init__(
        self,
        params: ChunkerParams,
        threads: int = 1,
        previous: Any = None,
        previous_tree: Any = None,
    ) -> None:
        Recording.given.append(previous)
        Recording.trees.append(previous_tree)
        self._inner = StreamChunker(
            params, threads=threads, previous=previous, previous_tree=previous_tree
        )
        Recording.made.append(self._inner)

    @property
    def subtrees(self) -> bytes:
        return self._inner.subtrees

    def feed(self, data: memoryview) -> ChunkList:
        return self._inner.feed(data)

    def finish(self) -> ChunkList:
        return self._inner.finish()


def _settings(tmp_path: Path, src: Path) -> config.Settings:
    cfg = tmp_path / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{src}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{tmp_path / "peer"}"\n\n'
        f'[store]\ncache_dir = "{tmp_path / "cache"}"\n'
    )
    return config.load(cfg)


async def test_an_update_is_cut_with_the_previous_versions_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(windows, "StreamChunker", Recording)
    Recording.given, Recording.trees, Recording.made = [], [], []
    src = tmp_path / "src"
    src.mkdir()
    old = os.urandom(12 * MIB)  # more than one read window
    new = _edited(random.Random(5), old)
    settings = _settings(tmp_path, src)
    for data in (old, new):
        (src / "model.bin").write_bytes(data)
        await asyncio.sleep(0.05)  # the file's ctime past the racy-clean window
        summary = await asyncio.wait_for(run_backfill(settings), timeout=60)
        assert (summary.replicated, summary.errors) == (1, 0)
    first, second = Recording.given
    assert first is None  # a first copy has no previous version
    # The first copy's block CVs were kept (store/subtrees.py) and given to
    # the update with the first version's digest: its unchanged blocks were
    # not hashed again for the whole digest (checked equal just below).
    assert Recording.trees[0] is None
    cvs, digest = Recording.trees[1]
    assert digest == chunk_buffer(old).digest and len(cvs) == 32 * 12
    # Which blocks qualify is tested in native/src/tree_tests.rs; here the
    # edit leaves some of the 12 unchanged at their offsets.
    assert 0 < Recording.made[1].reused_blocks < 12
    assert not (tmp_path / "cache" / "subtrees" / digest.hex()).exists()  # replaced
    new_digest = chunk_buffer(new).digest
    assert new_digest is not None
    assert (tmp_path / "cache" / "subtrees" / new_digest.hex()).exists()
    params = ChunkerParams()
    before = chunk_buffer(old, params)
    assert second == (list(memoryview(before.lengths).cast("I")), before.digests)
    # The update's manifest: the chunks of cutting it without hints.
    [_, latest] = (await manifests_by_key(FsBackend(tmp_path / "peer", "a")))["model.bin"]
    got = [(c.length, c.digest) for run in latest.runs for c in run.chunks]
    want = [(n, d) for _, n, d in _chunks(chunk_buffer(new, params))]
    print(f"{len(want)} chunks, {len(second[0])} hints")
    assert got == want and latest.digest == chunk_buffer(new, params).digest


class StuckPeer:
    """A manifest store whose listing never answers (a peer in retries), or
    fails at once."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def list_versions(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if self.fail:
            raise OSError("peer down")
        await asyncio.Event().wait()
        yield None

    put_many = entries = latest = versions_at = read = list_versions


async def test_a_stuck_or_failing_peer_gives_no_hints_and_does_not_hold_the_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ship, "HINTS_SECONDS", 0.05)
    event = ChangeEvent("src", "b", "k", Kind.CREATED, event_time_ns=1, size=64 * MIB)
    for fail in (True, False):
        got = await asyncio.wait_for(
            ship.previous_chunks([cast(Any, StuckPeer(fail))], event, 8 * MIB, SMALL), timeout=30
        )
        assert got is None
