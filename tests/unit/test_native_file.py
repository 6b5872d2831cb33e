"""``chunk_file``: mapped and read modes equal the buffer call, and files
that cannot be chunked fail with the matching ``OSError`` subclass."""

from __future__ import annotations

import mmap
import os
import random
from pathlib import Path

import pytest

from replicator import _native as native
from replicator._native import ChunkerParams, ChunkList

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
MIB = 1 << 20
WINDOW = 32 * MIB  # file.rs WINDOW: crossing it exercises the window seam


def summary(cl: ChunkList) -> tuple[bytes, bytes, bytes, bytes | None]:
    return cl.offsets, cl.lengths, cl.digests, cl.digest


@pytest.mark.parametrize("mmap_mode", [True, False])
def test_file_equals_buffer(tmp_path: Path, mmap_mode: bool) -> None:
    rng = random.Random(20)
    for size in (1, 100, 5000, 300_000):
        data = rng.randbytes(size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        got = native.chunk_file(path, SMALL, mmap=mmap_mode)
        assert summary(got) == summary(native.chunk_buffer(data, SMALL))
        assert summary(native.chunk_file(str(path), SMALL, mmap=mmap_mode)) == summary(got)


def test_file_across_windows_with_threads(tmp_path: Path) -> None:
    data = bytearray(random.Random(21).randbytes(WINDOW + 9 * MIB + 5))
    data[WINDOW - 100_000 : WINDOW + 700_000] = bytes(800_000)
    path = tmp_path / "big"
    path.write_bytes(data)
    want = summary(native.chunk_buffer(data))
    for mmap_mode in (True, False):
        for threads in (1, 3):
            got = native.chunk_file(path, threads=threads, mmap=mmap_mode)
            assert summary(got) == want, (mmap_mode, threads)


@pytest.mark.parametrize("mmap_mode", [True, False])
def test_empty_file(tmp_path: Path, mmap_mode: bool) -> None:
    path = tmp_path / "empty"
    path.touch()
    cl = native.chunk_file(path, mmap=mmap_mode)
    assert (len(cl), cl.total_length, cl.digest) == (0, 0, native.blake3_digest(b""))


@pytest.mark.parametrize("mmap_mode", [True, False])
def test_unusable_paths_raise_matching_errors(tmp_path: Path, mmap_mode: bool) -> None:
    with pytest.raises(IsADirectoryError):
        native.chunk_file(tmp_path, mmap=mmap_mode)
    with pytest.raises(FileNotFoundError):
        native.chunk_file(tmp_path / "missing", mmap=mmap_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Must fail at once: opening a FIFO without a writer would block forever.
    with pytest.raises(OSError, match="not a regular file"):
        native.chunk_file(fifo, mmap=mmap_mode)
    with pytest.raises(OSError, match="not a regular file"):
        native.chunk_file("/dev/null", mmap=mmap_mode)


def test_removed_file(tmp_path: Path) -> None:
    data = random.Random(22).randbytes(2 * MIB)
    path = tmp_path / "gone"
    path.write_bytes(data)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        path.unlink()
        # The mapping keeps the unlinked inode alive and readable.
        assert summary(native.chunk_buffer(mm)) == summary(native.chunk_buffer(data))
        for mmap_mode in (True, False):
            with pytest.raises(FileNotFoundError):
                native.chunk_file(path, mmap=mmap_mode)


def test_whole_digest_off_for_files(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(10_000))
    cl = native.chunk_file(path, SMALL, whole_digest=False)
    assert cl.digest is None
    assert cl.lengths == native.chunk_buffer(bytes(10_000), SMALL).lengths


def test_file_changed_error_is_an_os_error() -> None:
    # Raised when a file's size or mtime moves while it is chunked (the race
    # itself is tested deterministically in native/src/file_tests.rs).
    assert issubclass(native.FileChangedError, OSError)
    assert native.FileChangedError.__module__ == "replicator._native"
    assert "FileChangedError" in native.__all__
