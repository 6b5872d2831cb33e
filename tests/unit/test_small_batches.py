"""Small objects in batches (pipeline/small.py): whole files read in one
thread hop, chunked and placed together, and the cases the batch must hand
back to the per-object path, on real files and a real filesystem peer."""

from __future__ import annotations

import asyncio
import os
from dataclasses import astuple
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, blake3_digest, chunk_buffer, chunk_buffers
from replicator.origins import ObjectVersion
from replicator.origins import fs as fs_origin
from replicator.origins.fs import FsOrigin, version_of
from replicator.pipeline.small import Batcher, ManyChunks, chunk_all

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


async def test_read_many_answers_as_the_per_file_reader_does(tmp_path: Path) -> None:
    """The native batch read (one GIL release a batch) keeps ``_read_whole``'s
    rules file by file: a symlink, a directory, a file grown or replaced since
    it was listed, a non-UTF-8 name, a version listed without mtime/inode."""
    objs = [_old(tmp_path / f"d/f{i}", os.urandom(i * 997)) for i in range(6)]
    objs = [ObjectVersion(f"d/{o.key}", *astuple(o)[1:]) for o in objs]  # keys below d/
    raw = os.fsdecode(b"caf\xe9-\xff")  # not UTF-8: a lone surrogate in the key
    objs.append(_old(tmp_path / raw, b"latin-1 name"))
    objs.append(_old(tmp_path / "grown", b"short"))
    objs.append(_old(tmp_path / "replaced", b"first"))
    os.symlink(tmp_path / "d/f1", tmp_path / "link")
    objs.append(version_of("link", (tmp_path / "d/f1").stat()))
    (tmp_path / "dir").mkdir()
    objs.append(version_of("dir", (tmp_path / "dir").stat()))
    bare = objs[0]
    objs.append(ObjectVersion(bare.key, bare.size, bare.event_time_ns))  # no mtime, inode
    await asyncio.sleep(0.05)  # past the racy window
    (tmp_path / "grown").write_bytes(b"short and longer")
    (tmp_path / "replaced").unlink()
    (tmp_path / "replaced").write_bytes(b"again")
    got = await FsOrigin(tmp_path).read_many(objs)
    assert got == [fs_origin._read_whole(str(tmp_path), o) for o in objs]
    assert [d is None for d in got] == [False] * 7 + [True] * 4 + [False]


def test_a_batch_is_chunked_as_each_object_alone() -> None:
    datas: list[bytes] = [os.urandom(n) for n in (0, 1, 2047, 5000, 70_000, 300_000)]
    one = [chunk_buffer(d, PARAMS) for d in datas]
    for got in (chunk_all(datas, PARAMS), chunk_buffers([bytearray(d) for d in datas], PARAMS)):
        assert [(c.offsets, c.lengths, c.digests, c.digest) for c in got] == [
            (c.offsets, c.lengths, c.digests, c.digest) for c in one
        ]
    assert chunk_buffers([b"ab"], whole_digest=False)[0].digest is None


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
