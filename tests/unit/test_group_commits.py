"""A peer's group commit (``ManifestCommits``) keeps two batches of
manifests under way: the next batch is encoded and written while the one
before waits for its syncs, and each caller is still answered only once its
own manifests are durable. Real format 3 segment store on a directory peer;
the store's ``put_texts`` is held at a gate to see which writes overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from replicator._native import ChunkerParams, blake3_digest
from replicator.events import ChangeEvent, Kind
from replicator.pipeline.identity import version_identity
from replicator.pipeline.manifests import ManifestCommits, ManifestText, text_of
from replicator.store.backends.fs import FsBackend
from replicator.store.format import Manifest, StoreConfig
from replicator.store.segment_store import segment_store
from tests.integration.peer_reader import segment_manifests

PARAMS = ChunkerParams(4096, 16384, 65536, 2, 7)
WAIT = 10.0


def _texts(first: int, n: int) -> list[ManifestText]:
    out = []
    for i in range(first, first + n):
        event = ChangeEvent("fs", "b", f"k{i:03d}", Kind.CREATED, 10**18 + i, i)
        digest = blake3_digest(b"%d" % i)
        ident = version_identity(event, i, digest, etag_is_digest=True)
        out.append(text_of(Manifest(ident, False, digest, PARAMS)))
    return out


class Gate:
    """Holds every ``put_texts`` of a real store until opened; records the
    size of each write as it starts."""

    def __init__(self, store: object) -> None:
        self.inner = store.put_texts  # type: ignore[attr-defined]
        self.open = asyncio.Event()
        self.started: list[int] = []
        self.moved = asyncio.Event()

    async def put_texts(self, texts: Sequence[ManifestText]) -> list[bool | BaseException]:
        self.started.append(len(texts))
        self.moved.set()
        await self.open.wait()
        return list(await self.inner(texts))

    async def until(self, check: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not check():
                self.moved.clear()
                await self.moved.wait()

        await asyncio.wait_for(wait(), WAIT)


async def _commits(tmp_path: Path, writes: int) -> tuple[ManifestCommits, Gate, FsBackend]:
    backend = FsBackend(tmp_path / "peer", "peer")
    store = segment_store(backend, StoreConfig(PARAMS, version=3))
    gate = Gate(store)
    store.put_texts = gate.put_texts  # type: ignore[method-assign]
    return ManifestCommits(store, writes=writes), gate, backend


async def test_a_second_batch_is_written_while_the_first_waits(tmp_path: Path) -> None:
    commits, gate, backend = await _commits(tmp_path, writes=2)
    a = asyncio.ensure_future(commits.put_texts(_texts(0, 3)))
    await gate.until(lambda: gate.started == [3])
    b = asyncio.ensure_future(commits.put_texts(_texts(3, 2)))
    # The second batch does not wait for the first one's write to end.
    await gate.until(lambda: gate.started == [3, 2])
    c = asyncio.ensure_future(commits.put_texts(_texts(5, 4)))
    d = asyncio.ensure_future(commits.put_texts(_texts(9, 1)))
    for _ in range(20):
        await asyncio.sleep(0)
    # Two writes under way at most: the next two groups wait, together.
    assert gate.started == [3, 2]
    assert not (a.done() or b.done() or c.done())  # nobody answered before durable
    gate.open.set()
    answers = await asyncio.wait_for(asyncio.gather(a, b, c, d), WAIT)
    assert list(answers) == [[True] * 3, [True] * 2, [True] * 4, [True]]
    assert gate.started == [3, 2, 5]
    found = await segment_manifests(backend)
    assert sorted(found) == [f"k{i:03d}" for i in range(10)]
    print(f"writes as they started: {gate.started}")


async def test_one_write_at_a_time_when_asked(tmp_path: Path) -> None:
    commits, gate, _ = await _commits(tmp_path, writes=1)
    a = asyncio.ensure_future(commits.put_texts(_texts(0, 3)))
    await gate.until(lambda: gate.started == [3])
    b = asyncio.ensure_future(commits.put_texts(_texts(3, 2)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert gate.started == [3]
    gate.open.set()
    answers = await asyncio.wait_for(asyncio.gather(a, b), WAIT)
    assert list(answers) == [[True] * 3, [True] * 2]
    assert gate.started == [3, 2]


async def test_a_group_handed_in_as_a_writer_ends_is_written(tmp_path: Path) -> None:
    """Groups arriving one after another, each as the previous write ends,
    are all written (no group left without a writer)."""
    commits, gate, backend = await _commits(tmp_path, writes=2)
    gate.open.set()
    for i in range(30):
        got = await asyncio.wait_for(commits.put_texts(_texts(i, 1)), WAIT)
        assert got == [True]
    assert len(await segment_manifests(backend)) == 30
