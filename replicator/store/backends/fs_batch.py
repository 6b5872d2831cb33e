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
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from replicator import failpoints
from replicator.errors import IntegrityError
from replicator.store.backend import RESERVED_SEGMENT_PREFIX, ObjectInfo, check_key, check_prefix

if TYPE_CHECKING:
    from replicator.store.backends.fs import FsBackend
    from replicator.store.bulk import PutItem, PutOutcome

#: Below this many files one fsync each is cheaper than syncing the whole filesystem.
SYNCFS_MIN = 4


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
    paths cost more than the writes for a batch of small manifests."""
    from replicator.store.backends.fs import TMP_PREFIX, _write_verified  # noqa: PLC0415

    answers: list[PutOutcome] = [False] * len(items)
    staged: list[tuple[int, str, str]] = []  # (item, temporary file, final path)
    dirs: dict[str, None] = {}  # directories whose entries changed, in order
    root = str(backend.root)
    try:
        for i, (key, data, sha256) in enumerate(items):
            path = f"{root}/{check_key(key)}"
            parent = path.rpartition("/")[0]
            try:
                made = _new_dirs(parent)
                if made:  # a new key directory: nothing in it to find or sweep
                    dirs.update(dict.fromkeys(made))
                elif os.path.lexists(path):
                    continue  # present: False, as put_if_absent answers
                else:
                    backend._sweep(Path(parent))
                tmp = f"{parent}/{TMP_PREFIX}{secrets.token_hex(8)}"
                staged.append((i, tmp, path))
                # Not a TempFile: a batch may hold hundreds of files, more than
                # open descriptors allow. Sweepers only take files older than a
                # minute before their run (LEFTOVER_GRACE); a batch lasts seconds.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    _write_verified(fd, data, sha256, sync=False)
                finally:
                    os.close(fd)
            except (OSError, IntegrityError) as exc:
                answers[i] = _item_error(backend, exc, Path(path))
        sync_files(backend.root, [t for i, t, _ in staged if not isinstance(answers[i], Exception)])
        failpoints.hit(failpoints.GROUP_COMMIT_BEFORE_LINK)
        for i, tmp, path in staged:
            if isinstance(answers[i], Exception):
                continue
            try:
                answers[i] = _link(tmp, path)
                dirs[path.rpartition("/")[0]] = None
            except OSError as exc:
                answers[i] = _item_error(backend, exc, Path(path))
        sync_dirs(backend.root, list(dirs))
    except OSError as exc:  # a sync failed: nothing in the batch is durable
        raise backend._error(exc, backend.root) from exc
    finally:
        for _, tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return answers


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


def _link(tmp: str, path: str) -> bool:
    # link() fails with EEXIST when the name exists: of two concurrent
    # writers exactly one wins, and the loser's file never becomes visible.
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    return True


def sync_files(root: Path, files: Sequence[str | Path]) -> None:
    if not files:
        return
    if len(files) >= SYNCFS_MIN and _syncfs(root):
        return
    for f in files:
        fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
