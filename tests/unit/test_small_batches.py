"""Small objects in batches (pipeline/small.py): whole files read in one
thread hop, chunked and placed together, and the cases the batch must hand
back to the per-object path, on real files and a real filesystem peer."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, blake3_digest, chunk_buffer
from replicator.origins import ObjectVersion
from replicator.origins import fs as fs_origin
from replicator.origins.fs import FsOrigin, version_of
from replicator.pipeline.small import Batcher, ManyChunks

PARAMS = ChunkerParams(4096, 16384, 65536)


def _old(path: Path, data: bytes) -> ObjectVersion:
    """A file written, then listed once its ctime is past the racy window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return version_of(path.name, path.stat())


async def test_read_many_reads_whole_files_and_hands_back_the_doubtful(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datas = [os.urandom(n) for n in (0, 1, 5000, 70_000)]
    objs = [_old(tmp_path / f"f{i}", d) for i, d in enumerate(datas)]
    changed = _old(tmp_path / "changed", b"before")
    gone = _old(tmp_path / "gone", b"x")
    await asyncio.sleep(0.05)  # past the racy window of the files above
    (tmp_path / "changed").write_bytes(b"after!")  # same size, new ctime
    (tmp_path / "gone").unlink()
    origin = FsOrigin(tmp_path)
    got = await origin.read_many([*objs, changed, gone])
    assert got == [*datas, None, None]
    # A file inside its racy window: the window is widened so that a loaded
    # machine's pause between the write and the read cannot take it past.
    fresh = _old(tmp_path / "fresh", b"just written")
    monkeypatch.setattr(fs_origin, "RACY_NS", 3_600 * 10**9)
    monkeypatch.setattr(fs_origin, "RACY_COARSE_NS", 3_600 * 10**9)
    assert await origin.read_many([fresh]) == [None]


async def test_many_chunks_place_like_one_object_at_a_time() -> None:
    datas = [os.urandom(n) for n in (3000, 0, 40_000, 9000)]
    lists = [chunk_buffer(d, PARAMS) for d in datas]
    batch = ManyChunks(datas, lists)
    assert batch.counts == [len(cl) for cl in lists]
    i = 0
    for data, cl in zip(datas, lists, strict=True):
        for off, length, digest in (cl[k] for k in range(len(cl))):
            assert (batch.digest(i), batch.length(i)) == (digest, length)
            assert bytes(batch.data(i)) == data[off : off + length]
            assert blake3_digest(batch.data(i)) == digest
            i += 1
    assert len(batch) == i


def test_batcher_bounds_objects_and_bytes() -> None:
    b: Batcher[int] = Batcher(limit=3)
    assert [b.add(i, 10) for i in range(3)] == [None, None, [0, 1, 2]]
    assert b.add(7, 9 * 1024 * 1024) == [7]  # one object over the byte bound
    assert b.take() == []
