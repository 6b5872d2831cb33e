"""A peer kept in a local directory (a mounted disk, NFS, a checkpoint volume).

An object is a file at ``root/<key>``. A put writes a temporary file
(``.replicator-tmp-…``) in the object's own directory, hashes the bytes as
they are written, fsyncs, and only then renames (put) or hard-links
(put_if_absent) it into place and fsyncs the directory. So a reader, or a
process that restarts after a crash, sees either no object or the whole
verified one; leftover temporary files are never listed. Where the
filesystem has ``O_TMPFILE``, put_if_absent writes an unnamed file instead
and links that (``fs_batch.put_unnamed``): nothing is left behind at all.

Every operation is one ``asyncio.to_thread`` hop: a hop costs far more than
writing a block, so the blocking work of an operation is batched into it.
The batch methods (``put_many_if_absent``, ``get_under``; see
``store/backends/fs_batch.py``) go further: one hop, and one group commit,
for many small objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from replicator.errors import IntegrityError, NotFoundError, StoreError
from replicator.store.backend import (
    RESERVED_SEGMENT_PREFIX,
    Capabilities,
    ObjectInfo,
    Payload,
    check_key,
    check_prefix,
    sha256_of,
)
from replicator.store.backends import fs_batch, fs_probe
from replicator.store.backends.fs_batch import WRITE_BLOCK, _write_verified
from replicator.store.backends.fs_spool import FsSpool

if TYPE_CHECKING:
    from replicator.store.bulk import PutItem, PutOutcome

# TMP_PREFIX and the leftover functions are re-exported (see __all__): this
# module was their home before the writers' liveness record moved them.
from replicator.store.tempfiles import (
    TMP_PREFIX,
    Sweeper,
    TempFile,
    find_leftovers,
    remove_leftovers,
    tree_leftovers,
)

#: A temporary file is swept when it was last written this long before the
#: run started and no live writer holds it (store/tempfiles.py): the lock
#: decides liveness; the age keeps verify from listing a file whose writer
#: is between creating and locking it, or on a filesystem without locks.
LEFTOVER_GRACE = 60.0


class FsBackend:
    """Objects as files under ``root``; durable once a method returns."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str = "fs",
        *,
        page_size: int = 1000,
        probe_record: Path | None = None,
    ):
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.root = Path(root).resolve()
        self.name = name
        self.page_size = page_size
        #: Where the probe's answer is kept between runs (fs_probe.py); None: not kept.
        self.probe_record = probe_record
        #: Removes temporary files last written a minute before this run.
        self.sweeper = Sweeper(time.time() - LEFTOVER_GRACE)

    def __repr__(self) -> str:
        return f"FsBackend(name={self.name!r}, root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._write, path, data, sha256, False)

    async def put_if_absent(self, key: str, data: Payload, *, sha256: bytes | None = None) -> bool:
        path = self._path(key)
        return await asyncio.to_thread(self._write, path, data, sha256, True)

    def _write(self, path: Path, data: Payload, sha256: bytes | None, exclusive: bool) -> bool:
        try:
            if exclusive and path.exists():
                return False  # cheap early answer; link() below is what decides
            self._ensure_dir(path.parent)
            self._sweep(path.parent)
            # put_if_absent: an unnamed file where the filesystem has them
            # (fs_batch.put_unnamed); put replaces, which only rename can.
            won = (
                fs_batch.put_unnamed(str(path.parent), str(path), data, sha256)
                if exclusive
                else None
            )
            if won is None:
                with TempFile(path.parent, 0o644) as tmp:
                    _write_verified(tmp.fd, data, sha256)
                    won = _publish(tmp.path, path, exclusive)
            _fsync_dir(path.parent)
            return won
        except OSError as exc:
            raise self._error(exc, path) from exc

    async def put_many_if_absent(self, items: Sequence[PutItem]) -> list[PutOutcome]:
        """put_if_absent of each item in one thread hop, durable together."""
        return await asyncio.to_thread(fs_batch.write_many, self, items)

    async def open_spool(self, prefix: str) -> FsSpool:
        """A temporary file under ``prefix`` that a pack is appended to as it
        fills (store/spool.py); ``put_spool`` makes it an object."""
        directory = self._path(prefix)

        def run() -> FsSpool:
            try:
                self._ensure_dir(directory)
                return FsSpool(directory, self._error)
            except OSError as exc:
                raise self._error(exc, directory) from exc

        return await asyncio.to_thread(run)

    async def put_spool(self, key: str, spool: FsSpool) -> None:
        """The spooled bytes become ``key``, durable when this returns: an
        fsync of the file (its writeback started as it was written), a
        rename, an fsync of the directory."""
        path = self._path(key)

        def run() -> None:
            try:
                self._ensure_dir(path.parent)
                spool.publish(path)
                _fsync_dir(path.parent)
            except OSError as exc:
                raise self._error(exc, path) from exc

        await asyncio.to_thread(run)

    async def get_under(self, prefixes: Sequence[str]) -> list[list[tuple[str, bytes]]]:
        """Every object under each prefix, with its bytes, in one thread hop."""
        try:
            return await asyncio.to_thread(fs_batch.read_under, self, prefixes)
        except OSError as exc:
            raise self._error(exc, Path(exc.filename or self.root)) from exc

    def _sweep(self, directory: Path) -> None:
        self.sweeper.sweep(directory)

    def _sweep_fan_out(self) -> None:
        """Sweep the root and every packs/<hh>/ and index/<hh>/ once at start-up:
        a killed writer's pack may sit in a directory this run never writes."""
        self._sweep(self.root)
        for top in ("packs", "index"):
            self._sweep(self.root / top)  # spooled packs start in packs/ itself
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.root / top):
                    if entry.is_dir(follow_symlinks=False):
                        self._sweep(Path(entry.path))

    def _error(self, exc: OSError, path: Path) -> StoreError:
        """The error naming this destination and the full path."""
        if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
            # e.g. key "a" while "a/b" exists: the names collide on a filesystem.
            why = "the name collides with a directory or file"
        else:
            why = exc.strerror or type(exc).__name__
        return StoreError(f"destination {self.name!r}: {path}: {why}")

    def _ensure_dir(self, directory: Path) -> None:
        """Create missing directories, fsyncing each parent so the new entry is durable."""
        for parent in fs_batch.make_dirs(directory):
            _fsync_dir(parent)

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if start < 0 or (length is not None and length < 0):
            raise ValueError("start and length must be >= 0")
        path = self._path(key)
        return await asyncio.to_thread(self._read, path, start, length)

    def _read(self, path: Path, start: int, length: int | None) -> bytes:
        try:
            with path.open("rb") as f:
                f.seek(start)
                return f.read(-1 if length is None else length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFoundError(f"destination {self.name!r}: no object {path}") from exc
        except OSError as exc:
            raise self._error(exc, path) from exc

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return await asyncio.to_thread(self._stat, key, path)

    def _stat(self, key: str, path: Path) -> ObjectInfo | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error(exc, path) from exc
        if not path.is_file():
            return None  # a directory is a key prefix, not an object
        return ObjectInfo(key, st.st_size)

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        walker = _walk(self.root, check_prefix(prefix), start_after)
        while True:
            try:
                page = await asyncio.to_thread(_take, walker, self.page_size)
            except OSError as exc:  # e.g. an unreadable directory of the store
                raise self._error(exc, Path(exc.filename or self.root)) from exc
            for info in page:
                yield info
            if len(page) < self.page_size:
                return

    async def list_names(self, prefix: str = "") -> AsyncIterator[str]:
        """``list`` without the sizes: no stat per object (see store/bulk.py)."""
        walker = (key for key, _ in _walk_entries(self.root, check_prefix(prefix), ""))
        size = 64  # a caller asking "is there any?" stops after a short first page
        while True:
            try:
                page = await asyncio.to_thread(_take_names, walker, size)
            except OSError as exc:
                raise self._error(exc, Path(exc.filename or self.root)) from exc
            for key in page:
                yield key
            if len(page) < size:
                return
            size = min(size * 4, 4096)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._unlink, path)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error(exc, path) from exc
        # Empty directories are left in place: removing them would race a
        # concurrent put that just created the directory for its temp file.
        _fsync_dir(path.parent)

    async def probe(self) -> Capabilities:
        """Exercise put_if_absent and the checksum check on a real probe object."""
        key = f"{RESERVED_SEGMENT_PREFIX}probe-{secrets.token_hex(6)}"
        path = self.root / key
        data = b"replicator probe"

        def run() -> Capabilities:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._error(exc, self.root) from exc
            self._sweep_fan_out()
            known, seen = fs_probe.recall(self.probe_record, self.root)
            if known is not None:
                return known
            caps = self._probe_writes(path, key, data)
            fs_probe.remember(self.probe_record, seen, caps)
            return caps

        return await asyncio.to_thread(run)

    def _probe_writes(self, path: Path, key: str, data: bytes) -> Capabilities:
        """The probe: a conditional write twice, and a put with a wrong checksum."""
        try:
            first = self._write(path, data, None, True)
            second = self._write(path, b"other", None, True)
            try:
                self._write(path.with_name(key + "-bad"), data, sha256_of(b"x"), False)
                verifies = False
            except IntegrityError:
                verifies = True
            return Capabilities(
                put_if_absent=first and not second,
                checksum_algorithms=("SHA256",),
                verifies_checksums=verifies,
                ranged_upload_part_copy=False,
                verified_algorithms=("SHA256",) if verifies else (),
            )
        finally:
            for leftover in (path, path.with_name(key + "-bad")):
                with contextlib.suppress(OSError):  # nothing was written on a failure
                    leftover.unlink(missing_ok=True)

    async def close(self) -> None:
        return None


def _publish(tmp: Path, path: Path, exclusive: bool) -> bool:
    if not exclusive:
        os.replace(tmp, path)
        return True
    # link() fails with EEXIST when the name exists: of two concurrent
    # writers exactly one wins, and the loser's file never becomes visible.
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _take_names(it: Iterator[str], n: int) -> list[str]:
    return list(itertools.islice(it, n))


def _take(it: Iterator[ObjectInfo], n: int) -> list[ObjectInfo]:
    out: list[ObjectInfo] = []
    for info in it:
        out.append(info)
        if len(out) == n:
            break
    return out


def _walk(root: Path, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
    """Yield objects whose key starts with ``prefix`` in UTF-8 byte order."""
    for key, entry in _walk_entries(root, prefix, start_after):
        yield ObjectInfo(key, entry.stat(follow_symlinks=False).st_size)


def _walk_entries(
    root: Path, prefix: str, start_after: str
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(key, directory entry) of the objects under ``prefix``, in UTF-8 byte order.

    Sorting each directory by ``name`` for files and ``name + "/"`` for
    directories gives the global key order: every key below a directory
    starts with ``name/``, and code-point order equals UTF-8 byte order.
    """
    base, _, partial = prefix.rpartition("/")
    start_dir = root.joinpath(*base.split("/")) if base else root
    key_base = base + "/" if base else ""
    yield from _walk_dir(start_dir, key_base, partial, start_after)


def _walk_dir(
    directory: Path, key_base: str, partial: str, start_after: str
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    named = sorted(
        (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in entries
    )
    for sort_name, entry in named:
        if not entry.name.startswith(partial) or entry.name.startswith(RESERVED_SEGMENT_PREFIX):
            continue
        key = key_base + sort_name
        if sort_name.endswith("/"):
            # Skip a whole subtree whose keys all sort at or before start_after.
            if start_after and key < start_after and not start_after.startswith(key):
                continue
            yield from _walk_dir(Path(entry.path), key, "", start_after)
        elif entry.is_file(follow_symlinks=False) and key > start_after:
            yield key, entry


__all__ = [
    "LEFTOVER_GRACE",
    "TMP_PREFIX",
    "WRITE_BLOCK",
    "FsBackend",
    "Sweeper",
    "find_leftovers",
    "remove_leftovers",
    "tree_leftovers",
]
