"""The filesystem backend's spool: a pack appended to a temporary file.

Bytes go from the caller's buffers to the kernel with ``writev`` (no copy in
Python), and every ``WRITEBACK_STEP`` bytes the kernel is asked to start
writing them to disk (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does
not wait). A large copy then keeps the disk busy from its first megabytes,
as a plain ``write`` + ``fsync`` of the same bytes does once its fsync
starts, instead of leaving the whole pack to the fsync at the end.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from replicator.store.spool import Piece
from replicator.store.tempfiles import TempFile

#: Start writeback of each this many new bytes (asynchronously).
WRITEBACK_STEP = 4 << 20
#: ``writev`` takes at most this many buffers per call (Linux's IOV_MAX).
IOV_MAX = 1024
#: From <fcntl.h>: start writeback of the range's dirty pages, do not wait.
_SYNC_FILE_RANGE_WRITE = 2


class FsSpool:
    """A pack being written into ``directory`` (a temporary file nobody sweeps).

    A lock makes ``discard`` wait for a ``write`` or ``publish`` still running
    in another thread (its caller was cancelled): the descriptor is closed
    once, and never while in use (its number could be reused meanwhile)."""

    def __init__(self, directory: Path, error: Callable[[OSError, Path], Exception]) -> None:
        self._tmp = TempFile(directory, 0o644)
        self._error = error  # names the destination and the path (a full disk...)
        self._lock = threading.Lock()
        self._open = True
        self._size = 0
        self._started = 0  # bytes whose writeback was started

    @property
    def size(self) -> int:
        return self._size

    def write(self, pieces: Sequence[Piece]) -> None:
        views = [memoryview(p).cast("B") for p in pieces]
        with self._lock:
            self._check_open()
            try:
                for i in range(0, len(views), IOV_MAX):
                    _writev_all(self._tmp.fd, views[i : i + IOV_MAX])
            except OSError as exc:
                raise self._error(exc, self._tmp.path) from exc
            self._size += sum(v.nbytes for v in views)
            if self._size - self._started >= WRITEBACK_STEP:
                start_writeback(self._tmp.fd, self._started, self._size - self._started)
                self._started = self._size

    def publish(self, path: Path) -> None:
        """fsync the bytes and rename them to ``path``; the caller syncs
        ``path``'s directory."""
        with self._lock:
            self._check_open()
            os.fsync(self._tmp.fd)
            os.replace(self._tmp.path, path)
            self._close()

    def discard(self) -> None:
        with self._lock:
            if self._open:
                self._close()

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError("the spool was published or discarded")

    def _close(self) -> None:
        self._open = False
        self._tmp.close()


def _writev_all(fd: int, views: list[memoryview]) -> None:
    while views:
        n = os.writev(fd, views)
        # A short write (a signal, a full pipe of writeback): go on after it.
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views = views[1:]
        if views and n:
            views[0] = views[0][n:]


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux/glibc: the fsync does it all
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    call: Callable[[int, int, int, int], int] = fn
    return call


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + length)`` to disk.

    Only a hint: an error here (a filesystem without it) is left to the
    fsync, which reports any writeback error itself."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
