"""The directory source: inotify changes of a local tree as ChangeEvents.

Vocabulary: a key is *dirty* from the first inotify event that touches it
until it is handed out; it is *due* once its file is stable -- closed after
writing, renamed into place, removed, or unchanged for
``source.settle_seconds`` (a writer that keeps the file open). Several
inotify events of one key while it is dirty make one ChangeEvent, so the
temp-then-rename pattern of checkpoint savers gives one event for the final
name (the temp name is ignored by ``source.ignore``).

When a key is handed out its file is stat'ed: a regular file gives a
*created* event whose time is the file's ctime (no user tool can set it
back; the mtime can be), a missing one a *removed* event. Reading a version
is pinned on that ctime and size (:meth:`DirectorySource.open`), so bytes
of another version are never recorded under this one.

inotify can lose events: its queue overflows, or a directory cannot be
watched (``fs.inotify.max_user_watches``), or a directory is moved out of
the tree (its files vanish without an event each). Each sets :attr:`gaps`:
the daemon then reconciles the whole tree against every peer. Never a
silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import heapq
import itertools
import os
import stat
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from asyncinotify import Event, Inotify, Mask, Watch

from replicator.config import FsSourceSettings
from replicator.errors import ConfigError, SupersededError
from replicator.events import ChangeEvent, Kind, Position
from replicator.origins import ObjectReader, ObjectVersion
from replicator.origins.fs import FsReader
from replicator.sources import Backlog, Outcome

log = structlog.get_logger("replicator.fswatch")

_DIR_MASK = (
    Mask.CLOSE_WRITE
    | Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.ONLYDIR
    | Mask.DONT_FOLLOW
)
#: The file is complete now: hand it out without waiting to settle.
_FINAL = Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.DELETE | Mask.MOVED_FROM | Mask.ATTRIB
#: While the watch limit keeps directories unwatched, reconcile this often.
UNWATCHED_RECONCILE_SECONDS = 60.0
#: Keys stat'ed per thread hop.
BATCH = 1000
#: Pause between stat'ing keys and handing them out (see ``events``).
CATCH_UP_SECONDS = 0.005
#: Keys whose last handed-out state is remembered (for ``_transient``).
LAST_STATES = 100_000
#: A key whose replication failed (e.g. unreadable file) is offered again after this.
RETRY_FAILED_SECONDS = 10.0


@dataclass
class _Dirty:
    due: float  # monotonic time at which the key is handed out
    first_ns: int  # wall time of the first change seen (RPO of the backlog)


class DirectorySource:
    """A :class:`replicator.sources.Source` over ``settings.path``."""

    name = "fswatch"

    def __init__(self, settings: FsSourceSettings, source_id: str = "fs") -> None:
        self.root = Path(settings.path)
        self.bucket = settings.bucket
        self.source_id = source_id
        self.settle = settings.settle_seconds
        self.patterns = tuple(settings.ignore)
        #: Set when inotify may have missed changes; the daemon reconciles.
        self.gaps = asyncio.Event()
        self._dirty: dict[str, _Dirty] = {}
        self._in_hand: dict[str, int] = {}  # taken from _dirty, not handed out yet
        self._due: list[tuple[float, int, str]] = []  # heap; stale entries skipped
        self._seq = itertools.count()
        self._observed = itertools.count(1)
        self._wake = asyncio.Event()
        self._closed = False
        self._inotify: Inotify | None = None
        self._reader: asyncio.Task[None] | None = None
        self._unwatched = 0
        #: (ctime, size) last handed out per key, and states held back as
        #: probably transient (see ``_transient``); bounded, oldest dropped.
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._suspect: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------ Source

    async def start(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"source.path: {self.root} is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise ConfigError(f"source.path: {self.root} is not readable")
        self._loop = asyncio.get_running_loop()
        self._inotify = Inotify()
        await asyncio.to_thread(self._watch_tree, self.root, False)
        self._reader = asyncio.create_task(self._read_inotify())

    async def events(self) -> AsyncIterator[ChangeEvent]:
        while not self._closed:
            keys = self._take_due()
            if not keys:
                await self._sleep_until_due()
                continue
            described = await asyncio.to_thread(self._describe, keys)
            # A stat can land inside another write of the file; that write's
            # inotify event was queued by then (a truncate's) or follows at
            # once: let the reader take it, so the key shows up dirty again.
            await asyncio.sleep(CATCH_UP_SECONDS)
            for event in described:
                self._in_hand.pop(event.key, None)
                if event.key in self._dirty or self._transient(event):
                    continue  # described again once it is stable
                yield event
            self._in_hand.clear()  # keys that were directories

    def _transient(self, event: ChangeEvent) -> bool:
        """Is this probably a write seen half done? Then look again later.

        A file rewritten in place passes through states that are not
        versions: truncated to 0 (keeping the previous version's ctime when
        it comes within a clock tick: seen on Linux 6.x), or partly written.
        Such a state is smaller than the version before it, so a state that
        shrank (or is empty) is handed out only if it is still there
        ``settle_seconds`` later; growing and new files go at once."""
        if event.removed:
            return False
        seen = (event.event_time_ns, event.size)
        last = self._last.get(event.key)
        suspect = self._suspect.pop(event.key, None)
        shrank = event.size == 0 or (last is not None and event.size < last[1])
        if shrank and suspect != seen:
            self._suspect[event.key] = seen
            self._mark(event.key, time.monotonic() + self.settle)
            return True
        self._last[event.key] = seen
        self._last.move_to_end(event.key)
        if len(self._last) > LAST_STATES:
            self._last.popitem(last=False)
        return False

    async def done(self, event: ChangeEvent, outcome: Outcome) -> None:
        # Nothing to acknowledge for a directory; a failed version is offered
        # again (its file may be readable later), unless it changed meanwhile.
        if outcome is Outcome.FAILED and not self._closed:
            self._mark(event.key, time.monotonic() + RETRY_FAILED_SECONDS)

    def backlog(self) -> Backlog:
        """Dirty keys, and those taken but not handed out yet (the pipeline
        may be holding the source back: they still count for the RPO)."""
        times = [d.first_ns for d in self._dirty.values()] + list(self._in_hand.values())
        return Backlog(len(times), min(times, default=None))

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    async def open(self, event: ChangeEvent) -> ObjectReader:
        """A reader of exactly ``event``'s version (SupersededError if it moved on)."""
        obj = ObjectVersion(event.key, event.size, event.event_time_ns)
        fd = await asyncio.to_thread(_open_pinned, self.root / event.key, obj)
        return _CtimeReader(fd, obj)

    # ------------------------------------------------------------ marks

    def _mark(self, key: str, due: float) -> None:
        d = self._dirty.get(key)
        if d is None:
            self._dirty[key] = _Dirty(due, time.time_ns())
        else:
            d.due = due
        heapq.heappush(self._due, (due, next(self._seq), key))
        self._wake.set()

    def _take_due(self) -> list[str]:
        """Up to ``BATCH`` due keys; they stay in the backlog until handed out."""
        now, keys = time.monotonic(), list[str]()
        while self._due and self._due[0][0] <= now and len(keys) < BATCH:
            due, _, key = heapq.heappop(self._due)
            d = self._dirty.get(key)
            if d is not None and d.due == due:
                del self._dirty[key]
                self._in_hand[key] = d.first_ns
                keys.append(key)
        return keys

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def ignored(self, key: str) -> bool:
        return any(
            fnmatch.fnmatchcase(part, pat) for part in key.split("/") for pat in self.patterns
        )

    def _describe(self, keys: Sequence[str]) -> list[ChangeEvent]:
        """One event per key from its current state (runs in a thread)."""
        out = []
        for key in keys:
            try:
                st = os.lstat(self.root / key)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue  # directories are not objects
            seq = next(self._observed)
            if st is None or not stat.S_ISREG(st.st_mode):
                # Gone (or no longer a regular file, which listings skip too).
                out.append(self._event(key, Kind.REMOVED, time.time_ns(), 0, seq))
                continue
            event = self._event(key, Kind.CREATED, st.st_ctime_ns, st.st_size, seq)
            out.append(replace(event, mtime_ns=st.st_mtime_ns, inode=st.st_ino))
        return out

    def _event(self, key: str, kind: Kind, when: int, size: int, seq: int) -> ChangeEvent:
        pos = Position(offset=seq)
        return ChangeEvent(
            self.source_id, self.bucket, key, kind, when, size, observed=seq, position=pos
        )

    # ------------------------------------------------------------ inotify

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _watch_tree(self, top: Path, mark_files: bool) -> None:
        """Watch ``top`` and every directory under it (runs in a thread).

        Each directory is watched before it is listed, so a file created
        meanwhile is either listed or reported. With ``mark_files`` the files
        found are marked due: they may predate the watch (a directory
        created or moved in)."""
        stack = [top]
        while stack:
            here = stack.pop()
            if not self._add_watch(here):
                continue
            try:
                entries = list(os.scandir(here))
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed meanwhile: its parent reported it
            for entry in entries:
                key = self._key(Path(entry.path))
                if self.ignored(key):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif mark_files:
                    self._mark_threadsafe(key)

    def _add_watch(self, path: Path) -> bool:
        assert self._inotify is not None
        try:
            self._inotify.add_watch(path, _DIR_MASK)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._unwatched += 1
                log.error(
                    "inotify watch limit reached: directory not watched, reconciling "
                    "periodically (raise fs.inotify.max_user_watches)",
                    path=str(path),
                )
                self._gap("watch limit")
            # ENOENT/ENOTDIR: removed meanwhile; its parent's events cover it.
            return False
        return True

    def _mark_threadsafe(self, key: str) -> None:
        self._loop.call_soon_threadsafe(self._mark, key, time.monotonic())

    def _gap(self, why: str) -> None:
        def set_gap() -> None:
            log.warning("changes may have been missed: reconciling", reason=why)
            self.gaps.set()

        self._loop.call_soon_threadsafe(set_gap)

    async def _read_inotify(self) -> None:
        assert self._inotify is not None
        rescan = asyncio.create_task(self._rescan_unwatched())
        try:
            async for ev in self._inotify:
                await self._on_event(ev)
        finally:
            rescan.cancel()

    async def _rescan_unwatched(self) -> None:
        while True:
            await asyncio.sleep(UNWATCHED_RECONCILE_SECONDS)
            if self._unwatched:
                self.gaps.set()

    async def _on_event(self, ev: Event) -> None:
        if ev.mask & Mask.Q_OVERFLOW:
            self._gap("inotify queue overflow")
            return
        path = ev.path
        if path is None or ev.watch is None or ev.mask & Mask.IGNORED:
            return
        key = self._key(path)
        if self.ignored(key):
            return
        if ev.mask & Mask.ISDIR:
            await self._on_directory(ev, path)
        elif ev.mask & _FINAL:
            self._mark(key, time.monotonic())
        else:  # CREATE / MODIFY: still being written, or a writer that never closes
            self._mark(key, time.monotonic() + self.settle)

    async def _on_directory(self, ev: Event, path: Path) -> None:
        if ev.mask & (Mask.CREATE | Mask.MOVED_TO):
            await asyncio.to_thread(self._watch_tree, path, True)
        elif ev.mask & Mask.MOVED_FROM:
            # Its files left the tree without an event each; the watches under
            # it would now report stale paths.
            self._unwatch_under(path)
            self._gap("directory moved out of the tree")

    def _unwatch_under(self, path: Path) -> None:
        assert self._inotify is not None
        stale: list[Watch] = [
            w for w in self._inotify.watches if w.path == path or path in w.path.parents
        ]
        for w in stale:
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(w)


def _open_pinned(path: Path, obj: ObjectVersion) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise SupersededError(f"{obj.key!r} vanished before it was read") from exc
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise  # e.g. permission denied: an error, never taken for a removal
        raise SupersededError(f"{obj.key!r} became a symlink before it was read") from exc
    st = os.fstat(fd)
    if not _same(st, obj):
        os.close(fd)
        raise SupersededError(f"{obj.key!r} changed before it was read")
    return fd


def _same(st: os.stat_result, obj: ObjectVersion) -> bool:
    # ctime moves on every write, rename, chmod: equal ctime is the same version.
    return (
        stat.S_ISREG(st.st_mode) and st.st_size == obj.size and st.st_ctime_ns == obj.event_time_ns
    )


class _CtimeReader(FsReader):
    """The filesystem origin's reader, pinned on the ctime (the event time)."""

    async def finish(self) -> None:
        st = await asyncio.to_thread(os.fstat, self._fd)
        if not _same(st, self._obj) or self._pos != self._obj.size:
            raise SupersededError(f"{self._obj.key!r} changed while it was read")
