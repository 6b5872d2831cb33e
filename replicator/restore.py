"""Restore object versions from a peer into a local directory, byte for byte.

Per object: the runs of its manifest are fetched with a few ranged GETs in
flight, each chunk is re-hashed, the bytes are written in order to a
temporary file next to the final path while the whole-object BLAKE3 is
computed, and only a file whose length and digest match the manifest is
fsynced and renamed into place. Memory is bounded by
``parallel * READ_WINDOW * reader.MAX_READ``, never by object size.

A key becomes a path under the target directory segment by segment; a key
that could name anything outside it (absolute, ``..``/``.``/empty segments,
NUL) is refused and reported, and the restore exits 1.

Manifests a restore cannot read because their format 3 segment is damaged
are named per key (or per segment, when what it held is unknown) by
``restore_damage.py``, and the restore exits 1.

Chunks that ``repair`` relocated are read from their new place; a chunk
found damaged is recorded in the peer's ``quarantine/`` (best effort), so
no writer deduplicates onto it again (``store/quarantine.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Protocol

from replicator._native import Blake3Hasher
from replicator.errors import ConfigError, IntegrityError, ReplicatorError
from replicator.restore_damage import Unread, damaged_segments
from replicator.store.backend import Backend
from replicator.store.format import Manifest, PackRun
from replicator.store.manifest_store import ManifestStore, manifests_of
from replicator.store.quarantine import DamageMap, quarantine
from replicator.store.reader import (
    ChunkError,
    Problem,
    VersionEntry,
    choose_version,
    fetch_run,
    read_manifest,
    split_run,
    verified_chunks,
)
from replicator.store.tempfiles import Sweeper, TempFile
from replicator.workers import WorkerPool

#: Ranged GETs in flight per object; their results are written in order.
READ_WINDOW = 4
#: File times come from the kernel's coarse clock, which lags time.time() by
#: up to a tick: a file this run creates can look older than its start.
CLOCK_SLACK = 2.0


class Progress(Protocol):
    def add_total(self, nbytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def object_done(self, key: str) -> None: ...


class NoProgress:
    def add_total(self, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def object_done(self, key: str) -> None:
        pass


class UnsafeKeyError(ReplicatorError):
    """A key that cannot be written under the target directory safely."""


@dataclass(slots=True)
class RestoreSummary:
    objects: int = 0
    bytes: int = 0
    removed: list[str] = field(default_factory=list)
    not_yet_created: int = 0
    errors: list[Problem] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "removed": self.removed,
            "not_yet_created": self.not_yet_created,
            "errors": [p.to_json() for p in self.errors],
            "elapsed_seconds": round(self.elapsed_seconds, 6),
            # Only the restore itself for now; a drill adds detection and
            # fail-over time to this figure.
            "rto_seconds": round(self.elapsed_seconds, 6),
        }


def parse_time(text: str) -> int:
    """``--at`` as nanoseconds since the epoch: epoch seconds (fractions kept
    exactly) or ISO-8601, taken as UTC when it names no zone."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if number is not None:
        if not number.is_finite():
            raise ConfigError(f"--at {text!r}: not a finite time")
        return int(number * 1_000_000_000)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--at {text!r}: not ISO-8601 or epoch seconds") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def target_path(root: Path, key: str) -> tuple[Path, bool]:
    """(path under ``root``, is a directory marker) for ``key``.

    A key ending in '/' is an S3 "folder" marker and restores as a
    directory; any other key must split into plain segments."""
    if "\x00" in key:
        raise UnsafeKeyError(f"key {key!r} contains NUL")
    if key.startswith("/"):
        raise UnsafeKeyError(f"key {key!r} is an absolute path")
    is_dir = key.endswith("/")
    segments = (key[:-1] if is_dir else key).split("/")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise UnsafeKeyError(
                f"key {key!r} has an empty, '.' or '..' segment: it would not stay "
                "under the target directory as named"
            )
    return root.joinpath(*segments), is_dir


@dataclass(frozen=True, slots=True)
class Selection:
    bucket: str
    key_prefix: str
    exact: bool
    at_ns: int | None


async def restore(
    backend: Backend,
    selection: Selection,
    target: Path,
    *,
    parallel: int = 4,
    progress: Progress | None = None,
    damage_check: bool = True,
) -> RestoreSummary:
    """Restore every selected key (its version at ``at_ns``) under ``target``.

    Versions in damaged segments are problems (``damage_check``; a caller
    restoring key by key checks the segments once itself)."""
    started = time.monotonic()
    summary = RestoreSummary()
    root = await asyncio.to_thread(_prepare_root, target)
    # Restored files get the usual mode: 0666 less the umask (read, not set).
    umask = os.umask(0o022)
    os.umask(umask)
    damage = await DamageMap.load(backend)
    manifests = manifests_of(backend)
    job = _Job(backend, manifests, root, progress or NoProgress(), summary, 0o666 & ~umask, damage)
    unread = Unread(selection.key_prefix, selection.exact, selection.at_ns)
    if damage_check:
        unread.add(await damaged_segments(manifests, selection.bucket))
    found = False
    async with WorkerPool(job.restore_one, parallel) as pool:
        async for entry in _chosen(manifests, selection, summary):
            found = True
            unread.saw(entry.key, entry.version_name)
            await pool.put(entry)
    summary.errors.extend(unread.problems(restored_nothing=not found))
    nothing = _nothing_restored(selection, summary, found)
    if nothing:
        summary.errors.append(Problem(selection.key_prefix, "", nothing))
    summary.elapsed_seconds = time.monotonic() - started
    return summary


def _nothing_restored(sel: Selection, summary: RestoreSummary, found: bool) -> str | None:
    """Why an explicit --key, or a prefix without any manifest, gave nothing.

    A prefix whose keys were all removed is a valid (empty) state; a single
    key the operator asked for that cannot be produced is a failure."""
    if summary.errors or summary.objects:
        return None
    what = f"key {sel.key_prefix!r}" if sel.exact else f"prefix {sel.key_prefix!r}"
    if not found and not summary.not_yet_created:
        return f"no manifests for {what}"
    if not sel.exact:
        return None
    if summary.removed:
        return f"{what} was removed (its chosen version is a tombstone)"
    return f"{what} has no version at or before --at"


async def _chosen(
    manifests: ManifestStore, sel: Selection, summary: RestoreSummary
) -> AsyncIterator[VersionEntry]:
    """The manifest of the version to restore, per selected key."""
    versions_of = manifests.list_versions(sel.bucket, sel.key_prefix, exact=sel.exact)
    async for _key, versions in versions_of:
        chosen = choose_version(versions, sel.at_ns)
        if chosen is None:
            summary.not_yet_created += 1
        else:
            yield chosen


@dataclass(slots=True)
class _Job:
    backend: Backend
    manifests: ManifestStore
    root: Path
    progress: Progress
    summary: RestoreSummary
    mode: int
    damage: DamageMap
    #: Removes a killed restore's temporary files (older than this run).
    sweeper: Sweeper = field(default_factory=lambda: Sweeper(time.time() - CLOCK_SLACK))

    async def restore_one(self, entry: VersionEntry) -> None:
        """Restore one chosen version; a failure is recorded, not raised."""
        key, version = entry.key, entry.version_name
        try:
            await self.one(entry)
        except ChunkError as exc:
            self.summary.errors.append(
                Problem(key, version, str(exc), exc.pack.hex(), (exc.chunk or b"").hex())
            )
            await self._quarantine(exc)
        except (ReplicatorError, OSError) as exc:
            self.summary.errors.append(Problem(key, version, str(exc)))
        self.progress.object_done(key)

    async def _quarantine(self, exc: ChunkError) -> None:
        # A missing pack names no chunk: the pack writer already HEADs each
        # pack before deduplicating onto it, so nothing needs recording.
        if exc.chunk is None or self.damage.is_bad(exc.pack, exc.chunk):
            return
        # Best effort: restoring with a read-only credential must still work.
        with contextlib.suppress(ReplicatorError, OSError):
            await quarantine(self.backend, exc.pack, exc.chunk, str(exc))

    async def one(self, entry: VersionEntry) -> None:
        key = entry.key
        manifest = await read_manifest(self.manifests, entry)
        if manifest.removed:
            self.summary.removed.append(key)
            return
        path, is_dir = target_path(self.root, key)
        self.progress.add_total(manifest.identity.size)
        if is_dir:
            if manifest.identity.size:
                raise UnsafeKeyError(f"key {key!r} ends in '/' but holds data")
            await asyncio.to_thread(make_dirs, self.root, path)
        else:
            await self.restore_file(manifest, path)
            self.summary.bytes += manifest.identity.size
        self.summary.objects += 1

    async def restore_file(self, manifest: Manifest, path: Path) -> None:
        _check_sizes(manifest)
        tmp = await asyncio.to_thread(self._open_tmp, path)
        # Held open until it is renamed: while it is, no sweeper (of this
        # restore, a concurrent one, or another process) removes it, though
        # _fsync has given it the source's old mtime. Closing removes a
        # partial or unverified file (after the rename, a no-op).
        with tmp, os.fdopen(tmp.fd, "wb", closefd=False) as out:
            # One incremental BLAKE3 over the verified chunks: each byte
            # is hashed twice (chunk digest, whole digest), never cut.
            hasher = Blake3Hasher()
            await self._write_runs(manifest, out, hasher)
            digest = hasher.digest()
            if digest != manifest.digest:
                raise IntegrityError(
                    f"whole-object BLAKE3 {digest.hex()} != manifest {manifest.digest.hex()}"
                )
            await asyncio.to_thread(_fsync, out, manifest.identity.mtime_ns)
            await asyncio.to_thread(_publish, tmp.path, path)

    def _open_tmp(self, path: Path) -> TempFile:
        make_dirs(self.root, path.parent)
        self.sweeper.sweep(path.parent)
        # Created with the restored file's mode (the umask is in it).
        return TempFile(path.parent, self.mode)

    async def _write_runs(self, manifest: Manifest, out: IO[bytes], hasher: Blake3Hasher) -> None:
        runs = self.damage.effective_runs(manifest.runs)
        reads = (sub for run in runs for sub in split_run(run))
        window: deque[tuple[PackRun, asyncio.Task[bytes]]] = deque()

        def more() -> None:
            sub = next(reads, None)
            if sub is not None:
                window.append((sub, asyncio.create_task(fetch_run(self.backend, sub))))

        for _ in range(READ_WINDOW):
            more()
        try:
            while window:
                sub, task = window.popleft()
                data = await task
                more()
                n = await asyncio.to_thread(_write_verified, sub, data, out, hasher)
                self.progress.advance(n)
        finally:
            for _sub, task in window:
                task.cancel()


def make_dirs(root: Path, directory: Path) -> None:
    """Create ``directory`` under ``root`` one level at a time, refusing to
    pass through a symlink that leads outside ``root`` (mkdir(parents=True)
    would follow it and create directories elsewhere first)."""
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        with contextlib.suppress(FileExistsError):
            current.mkdir()
        real = Path(os.path.realpath(current))
        if real != root and root not in real.parents:
            raise UnsafeKeyError(f"{current} leads outside the target directory")


def _prepare_root(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    return target.resolve()


def _check_sizes(manifest: Manifest) -> None:
    total = sum(c.length for r in manifest.runs for c in r.chunks)
    if total != manifest.identity.size:
        raise IntegrityError(
            f"manifest lists {total} bytes of chunks for an object of {manifest.identity.size}"
        )


def _write_verified(run: PackRun, data: bytes, out: IO[bytes], hasher: Blake3Hasher) -> int:
    # One thread hop per read: hashing and writing megabytes, not a chunk.
    n = 0
    for raw in verified_chunks(run, data):
        out.write(raw)
        hasher.update(raw)
        n += len(raw)
    return n


def _fsync(out: IO[bytes], mtime_ns: int | None = None) -> None:
    out.flush()
    if mtime_ns is not None:
        # The source file's mtime (format v2 records it), set after the last
        # write and before the fsync that makes it durable.
        os.utime(out.fileno(), ns=(mtime_ns, mtime_ns))
    os.fsync(out.fileno())


def _publish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
