"""The filesystem origin: a local directory tree as a bucket.

Keys are relative POSIX paths; a version is (size, mtime_ns). Files are
read with plain reads into the caller's buffer, never mmap: a writer
truncating a mapped file would kill the daemon with SIGBUS. Blocking calls
run in threads, one hop per window.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

from replicator.errors import SupersededError
from replicator.origins import ObjectVersion


class FsOrigin:
    source_id = "fs"
    etag_is_digest = True
    #: Large windows keep thread hops and native calls rare (DESIGN: >= 16 MiB).
    window_size = 16 * 1024 * 1024

    def __init__(self, root: Path, bucket: str = "local") -> None:
        self.root = Path(root)
        self.bucket = bucket

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectVersion]:
        found = await asyncio.to_thread(_scan, self.root, prefix)
        for obj in found:
            yield obj

    def key_prefix(self, prefix: str) -> str:
        return prefix

    async def open(self, obj: ObjectVersion) -> FsReader:
        fd = await asyncio.to_thread(_open_pinned, self.root / obj.key, obj)
        return FsReader(fd, obj)

    async def close(self) -> None:
        return None


def _scan(root: Path, prefix: str) -> list[ObjectVersion]:
    """Regular files under ``root`` whose key starts with ``prefix``, in key order.

    Symlinks are not followed: a link could point outside the tree."""
    head = prefix.rpartition("/")[0]
    start = root / head if head else root
    out: list[ObjectVersion] = []
    for dirpath, dirnames, filenames in os.walk(start):
        rel = Path(dirpath).relative_to(root).as_posix()
        base = "" if rel == "." else rel + "/"
        dirnames[:] = [d for d in dirnames if _may_hold(base + d + "/", prefix)]
        for name in filenames:
            key = base + name
            if not key.startswith(prefix):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue  # vanished while listing
            if stat.S_ISREG(st.st_mode):
                out.append(ObjectVersion(key, st.st_size, st.st_mtime_ns))
    out.sort(key=lambda o: o.key.encode())
    return out


def _may_hold(dir_key: str, prefix: str) -> bool:
    """Can keys under ``dir_key`` start with ``prefix``? (prunes the walk)"""
    return dir_key.startswith(prefix) or prefix.startswith(dir_key)


def _same(st: os.stat_result, obj: ObjectVersion) -> bool:
    return st.st_size == obj.size and st.st_mtime_ns == obj.event_time_ns


def _open_pinned(path: Path, obj: ObjectVersion) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise SupersededError(f"{obj.key!r} vanished before it was read") from exc
    st = os.fstat(fd)
    if not _same(st, obj):
        os.close(fd)
        raise SupersededError(f"{obj.key!r} changed before it was read")
    return fd


class FsReader:
    """Reads one file version; ``finish`` proves it did not change meanwhile."""

    def __init__(self, fd: int, obj: ObjectVersion) -> None:
        self._fd = fd
        self._obj = obj
        self._pos = 0

    async def readinto(self, buf: memoryview) -> int:
        return await asyncio.to_thread(self._readinto, buf)

    def _readinto(self, buf: memoryview) -> int:
        got = 0
        while got < len(buf):
            n = os.preadv(self._fd, [buf[got:]], self._pos)
            if n == 0:
                break
            got += n
            self._pos += n
        if self._pos > self._obj.size or (got < len(buf) and self._pos != self._obj.size):
            raise SupersededError(f"{self._obj.key!r} changed size while it was read")
        return got

    async def finish(self) -> None:
        st = await asyncio.to_thread(os.fstat, self._fd)
        # mtime moves on every write, so equal size and mtime after the last
        # read mean the bytes read are the listed version's.
        if not _same(st, self._obj) or self._pos != self._obj.size:
            raise SupersededError(f"{self._obj.key!r} changed while it was read")

    async def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
