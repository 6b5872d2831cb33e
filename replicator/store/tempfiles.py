"""Temporary files of writers (fs puts, restores) and the sweep of a killed
writer's leftovers.

A writer writes a ``.replicator-tmp-…`` file next to its final name and
renames or links it into place. A file's age cannot tell a killed writer's
leftover from a live writer's file: a live writer may stall (a slow peer, a
loaded disk) for longer than any grace, and a restore sets the file's mtime
to the source's before the rename. So liveness is recorded, not guessed:
every file a writer holds is listed in this process (``TempFile``), and
holds an exclusive ``flock`` that other processes' sweepers test. The kernel
drops the lock when the writer closes the file or dies, so a killed
writer's file is swept and a live one never is. Age only narrows the
candidates (and decides alone where a filesystem has no locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from types import TracebackType

from replicator.store.backend import RESERVED_SEGMENT_PREFIX

TMP_PREFIX = RESERVED_SEGMENT_PREFIX + "tmp-"

#: (st_dev, st_ino) of the temporary files this process's writers hold. On
#: filesystems that emulate flock with POSIX locks (NFS), a lock does not
#: exclude its own process, and closing any descriptor of the file drops it:
#: a sweeper must skip these files without even opening them.
_held: set[tuple[int, int]] = set()
_held_lock = threading.Lock()


class TempFile:
    """A new temporary file in ``directory``, open for writing (``fd``), that
    no sweeper removes until ``close``; ``close`` removes it unless it was
    renamed into place meanwhile."""

    def __init__(self, directory: Path, mode: int = 0o600) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while True:
            self.path = directory / f"{TMP_PREFIX}{secrets.token_hex(8)}"
            try:
                self.fd = os.open(self.path, flags, mode)
                break
            except FileExistsError:
                continue
        st = os.fstat(self.fd)
        self._id = (st.st_dev, st.st_ino)
        with _held_lock:
            _held.add(self._id)
        # A new file is younger than any sweeper's cut-off, so nothing can
        # claim it before this lock is taken. No locks (some network
        # filesystems): this process's list still protects it.
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        finally:
            with _held_lock:
                _held.discard(self._id)
            os.close(self.fd)

    def __enter__(self) -> TempFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Sweeper:
    """Removes a killed writer's temporary files from each directory written
    to, once per directory while it is among the last ``remember`` ones: a
    set of every directory would grow with the key count (a manifest
    directory per key), and sweeping one again is only a scandir."""

    def __init__(self, before: float, remember: int = 1024) -> None:
        self.before = before
        self.remember = remember
        self._recent: OrderedDict[Path, None] = OrderedDict()
        self._lock = threading.Lock()  # puts run on several threads at once
        #: Leftover temporary files removed so far (for reports and tests).
        self.removed = 0

    def sweep(self, directory: Path) -> None:
        with self._lock:
            if directory in self._recent:
                self._recent.move_to_end(directory)
                return
            self._recent[directory] = None
            if len(self._recent) > self.remember:
                self._recent.popitem(last=False)
        removed = len(remove_leftovers(directory, self.before))
        with self._lock:
            self.removed += removed


def remove_leftovers(directory: Path, before: float) -> list[Path]:
    """Remove ``.replicator-tmp-*`` files in ``directory`` last modified
    before ``before`` (epoch seconds) that no live writer holds: what a
    killed put or restore left. Only this project's own temporary names are
    touched."""
    return [p for p, ident in _candidates(directory, before) if _abandoned(p, ident, remove=True)]


def find_leftovers(directory: Path, before: float) -> list[Path]:
    return [p for p, ident in _candidates(directory, before) if _abandoned(p, ident, remove=False)]


def tree_leftovers(root: Path, before: float) -> list[Path]:
    """Every leftover temporary file under ``root`` (verify reports them)."""
    found: list[Path] = []
    for directory, _dirs, _files in os.walk(root):
        found += find_leftovers(Path(directory), before)
    return sorted(found)


def _candidates(directory: Path, before: float) -> list[tuple[Path, tuple[int, int]]]:
    found: list[tuple[Path, tuple[int, int]]] = []
    try:
        with os.scandir(directory) as entries:
            for e in entries:
                if not e.name.startswith(TMP_PREFIX) or not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
                if st.st_mtime < before:
                    found.append((Path(e.path), (st.st_dev, st.st_ino)))
    except OSError:
        return found  # the write that follows reports what is wrong with the directory
    return found


def _abandoned(path: Path, ident: tuple[int, int], *, remove: bool) -> bool:
    """Whether no live writer holds ``path``; with ``remove``, unlink it
    while holding its lock, so no writer can be holding it at that moment."""
    with _held_lock:
        if ident in _held:
            return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False  # gone meanwhile, or not ours to open: leave it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a writer in another process holds it
        except OSError:
            pass  # no locks on this filesystem: its age alone decides
        if remove:
            os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
