"""Batches for the filesystem backend: many small objects per thread hop.

``write_many`` is a group commit. One put alone costs a thread hop, an
fsync of its file, an fsync of its directory and, for a new key directory
(every manifest has one), an fsync of the parent: ~3 syncs per object.
Here every temporary file of the batch is written first, then made durable
together (one ``syncfs`` of the peer's filesystem where Linux has it, else
an fsync each), then linked into place, then the directories are made
durable once (one more ``syncfs``, else an fsync per touched directory).
Nothing is answered before that last sync: the rule "durable once the call
returns" is unchanged, only shared.

The files are unnamed (``O_TMPFILE``) until they are linked, where the
filesystem has them: per object a ``mkdir`` of its key directory, an open,
a write and a ``linkat`` — no temporary name to create, unlink or sweep, and
a crash before the links leaves nothing. Elsewhere they are named
temporary files, as single puts use.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from replicator import failpoints
from replicator.errors import IntegrityError
from replicator.store.backend import (
    RESERVED_SEGMENT_PREFIX,
    ObjectInfo,
    Payload,
    check_key,
    check_prefix,
)
from replicator.store.tempfiles import TMP_PREFIX

if TYPE_CHECKING:
    from replicator.store.backends.fs import FsBackend
    from replicator.store.bulk import PutItem, PutOutcome

#: Bytes written per os.write call (bounds the size of one syscall, not memory).
WRITE_BLOCK = 1 << 20
#: Below this many files one fsync each is cheaper than syncing the whole filesystem.
SYNCFS_MIN = 4
#: Files of a group commit open at once (each until it is linked).
FD_GROUP = 256
#: Flags of an unnamed file (0 where the platform has no O_TMPFILE).
_TMPFILE_FLAGS = getattr(os, "O_TMPFILE", 0) and os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
#: What open(O_TMPFILE) answers on a filesystem or kernel without it.
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)
#: Devices where O_TMPFILE was refused: named temporary files there.
_no_anonymous: set[int] = set()
#: (item, descriptor, temporary name or "", final path) of a written file.
_Staged = tuple[int, int, str, str]


def fs_walk(root: Path, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
    from replicator.store.backends.fs import _walk  # noqa: PLC0415 - one module's helper

    return _walk(root, prefix, start_after)


def read_under(backend: FsBackend, prefixes: Sequence[str]) -> list[list[tuple[str, bytes]]]:
    return [_under(backend, prefix) for prefix in prefixes]


def _under(backend: FsBackend, prefix: str) -> list[tuple[str, bytes]]:
    """The objects under one prefix with their bytes. A prefix ending in a
    partial name (a manifest prefix: ``<key dir>/<event time>-``) is one
    scandir of that directory, without the listing's sort and stat, and
    plain string paths (pathlib costs more than the read); any other prefix
    goes through the ordinary walk."""
    base, _, partial = check_prefix(prefix).rpartition("/")
    root = str(backend.root)
    names = _files_in(f"{root}/{base}" if base else root, partial)
    if names is None:
        keys = [info.key for info in fs_walk(backend.root, prefix, "")]
    else:
        keys = [f"{base}/{name}" if base else name for name in names]
    found: list[tuple[str, bytes]] = []
    for key in keys:
        try:
            found.append((key, _read_all(f"{root}/{key}")))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed between the listing and the read
        except OSError as exc:
            raise backend._error(exc, backend._path(key)) from exc
    return found


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while block := os.read(fd, 1 << 16):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def _files_in(directory: str, partial: str) -> list[str] | None:
    """Sorted names of the files in ``directory`` starting with ``partial``;
    None when a directory matches too (its keys need the full walk)."""
    if not partial:
        return None
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for e in entries:
                if not e.name.startswith(partial) or e.name.startswith(RESERVED_SEGMENT_PREFIX):
                    continue  # another key's, or a temporary file
                if e.is_dir(follow_symlinks=False):
                    return None
                if e.is_file(follow_symlinks=False):
                    names.append(e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(names)


def write_many(backend: FsBackend, items: Sequence[PutItem]) -> list[PutOutcome]:
    """put_if_absent of every item, durable together (see the module doc).

    Plain string paths and os calls: with pathlib, building and checking
    paths cost more than the writes for a batch of small manifests. Items go
    in groups of at most ``FD_GROUP``: each file stays open until it is
    linked (an unnamed one has no other handle), so a group is what the
    process's descriptor limit allows; the directories are synced once."""
    answers: list[PutOutcome] = [False] * len(items)
    dirs: dict[str, None] = {}  # directories whose entries changed, in order
    try:
        for start in range(0, len(items), FD_GROUP):
            group = range(start, min(start + FD_GROUP, len(items)))
            _write_group(backend, items, group, answers, dirs)
        sync_dirs(backend.root, list(dirs))
    except OSError as exc:  # a sync failed: nothing in the batch is durable
        raise backend._error(exc, backend.root) from exc
    return answers


def _write_group(
    backend: FsBackend,
    items: Sequence[PutItem],
    group: range,
    answers: list[PutOutcome],
    dirs: dict[str, None],
) -> None:
    """Write, sync and link one group: files first, one sync, then names."""
    staged: list[_Staged] = []
    try:
        for i in group:
            try:
                if (one := _stage(backend, items[i], dirs)) is not None:
                    staged.append((i, *one))
            except (OSError, IntegrityError) as exc:
                answers[i] = _item_error(backend, exc, backend.root / check_key(items[i][0]))
        sync_files(backend.root, [fd for _, fd, _, _ in staged])
        failpoints.hit(failpoints.GROUP_COMMIT_BEFORE_LINK)
        _link_all(backend, staged, answers, dirs)
    finally:
        for _, fd, tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.close(fd)
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _stage(backend: FsBackend, item: PutItem, dirs: dict[str, None]) -> tuple[int, str, str] | None:
    """The item's bytes in a new file not yet named: (descriptor, temporary
    name or "" for an unnamed file, final path); None when the name is taken."""
    key, data, sha256 = item
    path = f"{backend.root}/{check_key(key)}"
    parent = path.rpartition("/")[0]
    made = _new_dirs(parent)
    if made:  # a new key directory: nothing in it to find or sweep
        dirs.update(dict.fromkeys(made))
    elif os.path.lexists(path):
        return None  # present: False, as put_if_absent answers
    fd, tmp = _new_file(backend, parent, sweep=not made)
    try:
        _write_verified(fd, data, sha256, sync=False)
    except BaseException:
        os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    return fd, tmp, path


def _new_file(backend: FsBackend, directory: str, *, sweep: bool) -> tuple[int, str]:
    """A new file in ``directory`` open for writing: unnamed (see
    ``open_unnamed``) where the filesystem can, else a named temporary file."""
    if (fd := open_unnamed(directory)) is not None:
        return fd, ""
    if sweep:
        backend._sweep(Path(directory))
    # Not a TempFile: a group may hold hundreds of files. Sweepers only take
    # files older than a minute before their run (LEFTOVER_GRACE); a batch
    # lasts seconds.
    tmp = f"{directory}/{TMP_PREFIX}{secrets.token_hex(8)}"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), tmp


def open_unnamed(directory: str) -> int | None:
    """A new unnamed file (O_TMPFILE) in ``directory``, open for writing, or
    None where the filesystem or kernel has none. There is no temporary
    name to create, remove or sweep, and a crash before the link leaves
    nothing behind (the kernel frees an inode no directory names)."""
    if not _TMPFILE_FLAGS or _proc_fds() is None:
        return None
    if _no_anonymous and os.stat(directory).st_dev in _no_anonymous:
        return None
    try:
        return os.open(directory, _TMPFILE_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno not in _NO_TMPFILE:
            raise
        _no_anonymous.add(os.stat(directory).st_dev)
        return None


def put_unnamed(directory: str, path: str, data: Payload, sha256: bytes | None) -> bool | None:
    """put_if_absent of one object through an unnamed file: written, fsynced,
    linked (the caller syncs the directory). None where there is no O_TMPFILE."""
    fd = open_unnamed(directory)
    if fd is None:
        return None
    try:
        _write_verified(fd, data, sha256)
        return _link(fd, "", path)
    finally:
        os.close(fd)


def _link_all(
    backend: FsBackend, staged: list[_Staged], answers: list[PutOutcome], dirs: dict[str, None]
) -> None:
    for i, fd, tmp, path in staged:
        try:
            answers[i] = _link(fd, tmp, path)
            dirs[path.rpartition("/")[0]] = None
        except OSError as exc:
            answers[i] = _item_error(backend, exc, Path(path))


def _write_verified(fd: int, data: Payload, expected: bytes | None, *, sync: bool = True) -> None:
    """Write ``data`` to the new file ``fd``; with ``expected``, hash exactly the bytes
    handed to the kernel. Without it nothing is hashed: a caller that did not
    compute a checksum when it produced the bytes gains nothing from one
    computed here over the same memory, and packs are tens of MiB."""
    digest = hashlib.sha256() if expected is not None else None
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        block = view[pos : pos + WRITE_BLOCK]
        written = os.write(fd, block)
        if digest is not None:
            digest.update(block[:written])
        pos += written
    if sync:  # a group commit syncs the whole batch at once instead
        os.fsync(fd)
    if digest is None or expected is None:
        return
    actual = digest.digest()
    if actual != expected:
        raise IntegrityError(f"sha256 of written bytes {actual.hex()} != expected {expected.hex()}")


def _new_dirs(directory: str) -> list[str]:
    """Create ``directory`` and its missing parents (not yet synced); the
    directories whose entries changed, parents first. One mkdir when only
    the last is new (a new key's manifest directory), where a check first
    would cost a stat as well."""
    try:
        os.mkdir(directory)
    except FileExistsError:
        return []  # (a file by that name fails the item at its open)
    except FileNotFoundError:
        parent = directory.rpartition("/")[0]
        if not parent:
            raise
        made = _new_dirs(parent)
        with contextlib.suppress(FileExistsError):  # a concurrent writer made it
            os.mkdir(directory)
        return [*made, parent]
    return [directory.rpartition("/")[0]]


def _item_error(backend: FsBackend, exc: Exception, path: Path) -> Exception:
    return backend._error(exc, path) if isinstance(exc, OSError) else exc


def make_dirs(directory: Path) -> list[Path]:
    """Create missing directories (not yet synced): the directories whose
    entries changed, parents first."""
    missing: list[Path] = []
    d = directory
    while not d.is_dir():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent writer made it
            d.mkdir()
    return [d.parent for d in reversed(missing)]


def _link(fd: int, tmp: str, path: str) -> bool:
    # link() fails with EEXIST when the name exists: of two concurrent
    # writers exactly one wins, and the loser's file never becomes visible.
    # An unnamed file is linked through /proc/self/fd/<fd> (linkat with
    # AT_SYMLINK_FOLLOW: AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
    try:
        if tmp:
            os.link(tmp, path)
        else:
            os.link(str(fd), path, src_dir_fd=_proc_fds(), follow_symlinks=True)
    except FileExistsError:
        return False
    return True


#: (pid, descriptor of /proc/<pid>/fd): "self" is resolved when it is opened,
#: so a forked child must open its own.
_proc: tuple[int, int | None] = (0, None)


def _proc_fds() -> int | None:
    """A descriptor of this process's /proc/self/fd (None without /proc)."""
    global _proc  # noqa: PLW0603 - one descriptor per process, opened once
    pid = os.getpid()
    if _proc[0] != pid:
        try:
            fd: int | None = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = None
        _proc = (pid, fd)
    return _proc[1]


def sync_files(root: Path, fds: Sequence[int]) -> None:
    """Make the open files ``fds`` durable: one syncfs, or an fsync each."""
    if not fds:
        return
    if len(fds) >= SYNCFS_MIN and _syncfs(root):
        return
    for fd in fds:
        os.fsync(fd)


def sync_dirs(root: Path, dirs: Sequence[str | Path]) -> None:
    if not dirs:
        return
    if len(dirs) >= SYNCFS_MIN and _syncfs(root):
        return
    for d in dirs:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library already loaded into the process (no find_library: it
    runs ldconfig, which costs start-up)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _syncfs(root: Path) -> bool:
    """syncfs(2) on the filesystem holding ``root``: True when done, False
    where the call does not exist (then the caller fsyncs each file). Since
    Linux 5.8 it reports writeback errors, which raise here."""
    fn = getattr(_libc(), "syncfs", None)
    if fn is None:
        return False
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(root))
    finally:
        os.close(fd)
    return True
