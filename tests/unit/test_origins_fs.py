"""The filesystem origin and the window reader, on real files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, blake3_digest, chunk_buffer
from replicator.errors import SupersededError
from replicator.origins import ObjectVersion
from replicator.origins import fs as fs_origin
from replicator.origins.fs import FsOrigin
from replicator.pipeline.windows import Chunked, chunk_windows

PARAMS = ChunkerParams(4096, 16384, 65536)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _listing(origin: FsOrigin, prefix: str = "") -> list[ObjectVersion]:
    return [o async for o in origin.list(prefix)]


async def test_listing_keys_sizes_times_and_prefixes(tmp_path: Path) -> None:
    for rel, size in [("b.bin", 3), ("a/x.txt", 1), ("a/y/z", 0), ("ab", 2), ("a b+é", 5)]:
        _write(tmp_path / rel, b"x" * size)
    os.symlink(tmp_path / "b.bin", tmp_path / "link")  # never followed
    os.mkfifo(tmp_path / "fifo")  # not a regular file
    origin = FsOrigin(tmp_path)
    found = await _listing(origin)
    assert [o.key for o in found] == ["a b+é", "a/x.txt", "a/y/z", "ab", "b.bin"]
    b = found[-1]
    st = os.stat(tmp_path / "b.bin")
    assert (b.size, b.event_time_ns, b.version_id) == (3, st.st_ctime_ns, "")
    assert (b.mtime_ns, b.inode) == (st.st_mtime_ns, st.st_ino)
    assert [o.key for o in await _listing(origin, "a/")] == ["a/x.txt", "a/y/z"]
    assert [o.key for o in await _listing(origin, "a")] == ["a b+é", "a/x.txt", "a/y/z", "ab"]
    assert [o.key for o in await _listing(origin, "a/y")] == ["a/y/z"]
    assert await _listing(origin, "nothing/") == []


async def _read_all(origin: FsOrigin, obj: ObjectVersion, window: int) -> tuple[bytes, Chunked]:
    reader = await origin.open(obj)
    out = Chunked()
    parts: list[bytes] = []
    try:
        async for batch in chunk_windows(reader, PARAMS, window, out):
            for i in range(len(batch)):
                data = bytes(batch.data(i))
                assert blake3_digest(data) == batch.digest(i)
                assert len(data) == batch.length(i)
                parts.append(data)
    finally:
        await reader.close()
    return b"".join(parts), out


@pytest.mark.parametrize("window", [65536, 100_003, 1 << 20])
@pytest.mark.parametrize("size", [0, 1, 65536, 700_001])
async def test_windows_rebuild_the_file_with_native_cut_points(
    tmp_path: Path, size: int, window: int
) -> None:
    """Chunks spanning two windows come out whole; cuts equal chunk_buffer's."""
    data = os.urandom(size)
    _write(tmp_path / "f", data)
    origin = FsOrigin(tmp_path)
    [obj] = await _listing(origin)
    rebuilt, out = await _read_all(origin, obj, window)
    assert rebuilt == data
    assert out.size == size and out.digest == blake3_digest(data)
    assert out.digest == chunk_buffer(data, PARAMS).digest


async def test_vanished_or_changed_before_read_is_superseded(tmp_path: Path) -> None:
    _write(tmp_path / "gone", b"1234")
    _write(tmp_path / "changed", b"1234")
    origin = FsOrigin(tmp_path)
    gone, changed = sorted(await _listing(origin), key=lambda o: o.key, reverse=True)
    os.remove(tmp_path / "gone")
    _write(tmp_path / "changed", b"12345")
    with pytest.raises(SupersededError, match="vanished"):
        await origin.open(gone)
    with pytest.raises(SupersededError, match="changed"):
        await origin.open(changed)


def _reset_mtime(path: Path, obj: ObjectVersion, delta: int = 0) -> None:
    os.utime(path, ns=(obj.event_time_ns, obj.event_time_ns + delta))


@pytest.mark.parametrize("change", ["truncate", "append", "rewrite-same-size"])
async def test_changed_while_read_is_superseded(tmp_path: Path, change: str) -> None:
    path = tmp_path / "big"
    _write(path, os.urandom(600_000))
    origin = FsOrigin(tmp_path)
    [obj] = await _listing(origin)
    reader = await origin.open(obj)
    windows = chunk_windows(reader, PARAMS, 200_000, Chunked())
    await anext(windows)  # the first window is read
    if change == "truncate":
        os.truncate(path, 300_000)
    elif change == "append":
        with path.open("ab") as f:
            f.write(b"more")
        _reset_mtime(path, obj)  # even with its mtime put back, the size gives it away
    else:
        with path.open("r+b") as f:
            f.write(b"\0" * 10)
        _reset_mtime(path, obj, delta=1)  # a write moves mtime; make sure it did
    with pytest.raises(SupersededError):
        async for _ in windows:
            pass
    await reader.close()


async def test_listing_pages_through_large_trees_in_byte_order(tmp_path: Path) -> None:
    keys = [f"d{i % 3}/f{i:04d}" for i in range(1005)] + ["d0-x", "d0.y", "d1/sub/z"]
    for k in keys:
        _write(tmp_path / k, b"")
    found = [o.key for o in await _listing(FsOrigin(tmp_path))]
    assert found == sorted(keys, key=str.encode)
    assert found.index("d0-x") < found.index("d0.y") < found.index("d0/f0000")


async def test_a_write_in_the_racy_window_after_a_read_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A same-size write right after the read, mtime put back: with the ctime
    in the same clock tick it would look unchanged to the next run, so
    ``finish`` waits out the tick and looks again."""
    monkeypatch.setattr(fs_origin, "RACY_NS", 400_000_000)  # a tick long enough to act in
    monkeypatch.setattr(fs_origin, "RACY_COARSE_NS", 400_000_000)
    path = tmp_path / "hot"
    _write(path, b"a" * 1000)
    [obj] = await _listing(FsOrigin(tmp_path))
    reader = await FsOrigin(tmp_path).open(obj)
    try:
        assert await reader.readinto(memoryview(bytearray(4096))) == 1000
        finishing = asyncio.ensure_future(reader.finish())
        await asyncio.sleep(0.05)
        assert not finishing.done(), "finish waits while the ctime is this recent"
        _write(path, b"b" * 1000)
        os.utime(path, ns=(obj.mtime_ns or 0, obj.mtime_ns or 0))
        with pytest.raises(SupersededError, match="changed while it was read"):
            await finishing
    finally:
        await reader.close()
    old = tmp_path / "old"
    _write(old, b"c")
    os.utime(old, ns=(1, 1))
    [cold] = [o for o in await _listing(FsOrigin(tmp_path)) if o.key == "old"]
    monkeypatch.setattr(fs_origin, "RACY_NS", 0)
    monkeypatch.setattr(fs_origin, "RACY_COARSE_NS", 0)
    quiet = await FsOrigin(tmp_path).open(cold)
    await quiet.readinto(memoryview(bytearray(8)))
    await quiet.finish()  # no wait, no change: the version stands
    await quiet.close()
