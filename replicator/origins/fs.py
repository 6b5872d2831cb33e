"""The filesystem origin: a local directory tree as a bucket.

Keys are relative POSIX paths. A version's event time is the file's ctime,
which no user tool can set back (``cp -p``, ``rsync -t`` and ``touch -d``
move the mtime, backwards too); the mtime is kept as metadata. A file
is unchanged only while its size, mtime, ctime and inode all are (borg's
files-cache rule): a same-size edit whose mtime was put back still moves
the ctime, and a file replaced by another one has a new inode. Files are
read with plain reads into the caller's buffer, never mmap: a writer
truncating a mapped file would kill the daemon with SIGBUS. Blocking calls
run in threads, one hop per window.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from replicator._native import read_files
from replicator.errors import SourceUnavailableError, SupersededError
from replicator.origins import ObjectVersion

#: Objects listed per thread hop.
_PAGE = 1000
#: How long after its ctime a file's timestamps could still be repeated by
#: another write: Linux stamps files from a coarse clock (one tick, 1-10 ms);
#: a filesystem keeping whole seconds (ctime a multiple of 1 s) needs 2 s.
RACY_NS = 20_000_000
RACY_COARSE_NS = 2_000_000_000


#: What ``read_many`` answers: each object's bytes, or None (read it alone).
Contents = list[bytes | None]


def racy_window_ns(ctime_ns: int) -> int:
    return RACY_COARSE_NS if ctime_ns % 1_000_000_000 == 0 else RACY_NS


class FsOrigin:
    source_id = "fs"
    etag_is_digest = True
    #: Three windows are in use at once (one placed, one cut, one read:
    #: ``windows.WINDOWS_AHEAD``): 8 MiB each keeps a 4 GiB object's peak RSS
    #: growth near 37 MiB, and a thread hop (~170 us) stays ~2 % of chunking
    #: a window (~7 ms).
    window_size = 8 * 1024 * 1024

    def __init__(self, root: Path, bucket: str = "local") -> None:
        self.root = Path(root)
        self.bucket = bucket
        self.unlisted: list[tuple[str, str]] = []

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectVersion]:
        self.unlisted = []
        walk = _walk(self.root, "", prefix, self.unlisted)
        # Pages from a blocking walk, one thread hop each: memory stays one
        # page (and one directory) however large the tree is.
        while page := await asyncio.to_thread(_take, walk, _PAGE):
            for obj in page:
                yield obj

    def key_prefix(self, prefix: str) -> str:
        return prefix

    async def check(self) -> None:
        await asyncio.to_thread(check_root, self.root)

    async def refresh(self, obj: ObjectVersion) -> ObjectVersion | None:
        try:
            st = await asyncio.to_thread(os.stat, self.root / obj.key, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return version_of(obj.key, st) if stat.S_ISREG(st.st_mode) else None

    async def open(self, obj: ObjectVersion) -> FsReader:
        fd = await asyncio.to_thread(_open_pinned, self.root / obj.key, obj)
        return FsReader(fd, obj)

    async def read_many(self, objs: Sequence[ObjectVersion]) -> Contents:
        """The whole bytes of each (small) file, all in one thread hop.

        None for a file the caller must read through ``open`` instead: it
        vanished or changed (``open`` tells which), or its ctime is too
        recent to be sure (``FsReader.finish`` waits out that window)."""
        root = os.fsencode(self.root) + b"/"
        wanted = [
            (
                root + os.fsencode(o.key),
                o.size,
                o.event_time_ns,
                o.mtime_ns,
                o.inode,
                racy_window_ns(o.event_time_ns),
            )
            for o in objs
        ]
        # One native call: the GIL is let go once for the batch, where
        # ``_read_whole`` (the same rules, kept as their reference) let it
        # go four times a file.
        return await asyncio.to_thread(read_files, wanted)

    async def close(self) -> None:
        return None


def check_root(root: Path) -> None:
    """The source root exists, is a directory and can be listed."""
    what = f"source path {str(root)!r}"
    try:
        if not root.is_dir():
            reason = "is not a directory" if root.exists() else "does not exist"
            raise SourceUnavailableError(f"{what} {reason} (check source.path; is it mounted?)")
        with os.scandir(root) as entries:
            next(entries, None)
    except OSError as exc:
        raise SourceUnavailableError(f"{what} cannot be read: {exc.strerror or exc}") from exc


def _take(it: Iterator[ObjectVersion], n: int) -> list[ObjectVersion]:
    return list(itertools.islice(it, n))


def _walk(
    root: Path, base: str, prefix: str, unlisted: list[tuple[str, str]]
) -> Iterator[ObjectVersion]:
    """Regular files under ``root/base`` whose key starts with ``prefix``, in
    UTF-8 byte order of keys (the order S3 lists in).

    Sorting a directory by ``name`` for files and ``name/`` for directories
    gives the global key order. Symlinks are not followed: a link could
    point outside the tree. A directory below the root that cannot be read
    is recorded in ``unlisted`` and skipped: an error for it alone."""
    try:
        entries = list(os.scandir(root / base if base else root))
    except (FileNotFoundError, NotADirectoryError):
        return  # removed while listing
    except OSError as exc:
        if not base:
            raise  # the root itself: the whole listing failed
        unlisted.append((base, exc.strerror or str(exc)))
        return
    # Sorted by name alone (every key here starts with ``base``); an entry
    # kept as a bare name is a directory, sorted as "name/".
    items: list[tuple[bytes, os.DirEntry[str] | str]] = []
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            if _may_hold(base + e.name + "/", prefix):
                items.append((os.fsencode(e.name + "/"), e.name))
        elif e.is_file(follow_symlinks=False) and (
            not prefix or (base + e.name).startswith(prefix)
        ):
            items.append((os.fsencode(e.name), e))
    items.sort(key=_first)
    for _, item in items:
        if isinstance(item, str):
            yield from _walk(root, base + item + "/", prefix, unlisted)
            continue
        try:
            st = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # vanished while listing
        yield ObjectVersion(
            base + item.name, st.st_size, st.st_ctime_ns, "", "", st.st_mtime_ns, st.st_ino
        )


def _first(item: tuple[bytes, object]) -> bytes:
    return item[0]


def version_of(key: str, st: os.stat_result) -> ObjectVersion:
    return ObjectVersion(key, st.st_size, st.st_ctime_ns, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def _may_hold(dir_key: str, prefix: str) -> bool:
    """Can keys under ``dir_key`` start with ``prefix``? (prunes the walk)"""
    return dir_key.startswith(prefix) or prefix.startswith(dir_key)


def _same(st: os.stat_result, obj: ObjectVersion) -> bool:
    # A version from an event may not know the mtime or inode: compare what it knows.
    return (
        (st.st_size, st.st_ctime_ns) == (obj.size, obj.event_time_ns)
        and obj.mtime_ns in (None, st.st_mtime_ns)
        and obj.inode in (None, st.st_ino)
    )


def _read_whole(root: str, obj: ObjectVersion) -> bytes | None:
    """``obj``'s bytes, proven to be that version's, or None (see read_many).

    One fstat after the read is enough: ctime moves on every write and
    cannot be set back, so an unchanged identity means the bytes are the
    listed version's (the same proof as FsReader.finish)."""
    try:
        fd = os.open(f"{root}/{obj.key}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        parts, got = [], 0
        while got < obj.size and (block := os.read(fd, obj.size - got)):
            parts.append(block)
            got += len(block)
        st = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if got != obj.size or not _same(st, obj):
        return None
    if time.time_ns() - obj.event_time_ns < racy_window_ns(obj.event_time_ns):
        return None  # racy-clean: only the per-object path may wait it out
    return parts[0] if len(parts) == 1 else b"".join(parts)


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
        await self._unchanged()
        # Racy-clean (git's name for it): a write in the same timestamp tick
        # as the version read would leave size, times and inode as they are,
        # and the next run would take the file for unchanged. Once the tick
        # is over, any later write gets a later ctime: wait for it, look again.
        # (At most one window: a ctime ahead of our clock must not stall us.)
        window = racy_window_ns(self._obj.event_time_ns)
        wait_ns = min(window, window - (time.time_ns() - self._obj.event_time_ns))
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)
            await self._unchanged()

    async def _unchanged(self) -> None:
        st = await asyncio.to_thread(os.fstat, self._fd)
        # ctime moves on every write (and cannot be set back), so equal
        # size, times and inode after the last read mean the bytes read are
        # the listed version's.
        if not _same(st, self._obj) or self._pos != self._obj.size:
            raise SupersededError(f"{self._obj.key!r} changed while it was read")

    async def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
