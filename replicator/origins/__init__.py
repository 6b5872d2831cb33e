"""Origins: where source bytes are read (the first room of the flow).

Vocabulary: an *object version* is what a listing or an event names (key,
size, the storage system's event time, version id, ETag). An origin
*opens* a version and reads it front to back into caller-owned buffers; if
the version vanished or changed before or while it was read, the read
raises SupersededError -- a newer state exists, nothing failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from replicator.config import Settings
from replicator.records import record


@record(frozen=True, slots=True)
class ObjectVersion:
    key: str
    size: int
    event_time_ns: int  # the storage system's time (a file's ctime, LastModified)
    version_id: str = ""
    etag: str = ""
    mtime_ns: int | None = None  # a file's mtime: metadata, restored onto the file
    inode: int | None = None  # a file's inode: with size, mtime and ctime, change detection


class ObjectReader(Protocol):
    """One pinned version, read sequentially."""

    async def readinto(self, buf: memoryview) -> int:
        """Fill ``buf`` from the current position; fewer bytes only at the end."""
        ...

    async def finish(self) -> None:
        """Confirm the version did not change while it was read."""
        ...

    async def close(self) -> None: ...


class Origin(Protocol):
    #: Recorded as SourceIdentity.source; the daemon must use the same value.
    source_id: str
    bucket: str
    #: True when the ETag recorded for a version is its whole-object BLAKE3
    #: (a filesystem has no ETag of its own).
    etag_is_digest: bool
    #: Bytes read per window: the memory one object in flight holds.
    window_size: int
    #: (key prefix, reason) of each directory the last listing could not
    #: read: its keys were not listed, which must not be taken as removals.
    unlisted: list[tuple[str, str]]

    async def check(self) -> None:
        """Raise SourceUnavailableError (exit 2) naming the source root or
        bucket when it is missing, not a directory, or cannot be read: an
        empty listing must never be how a typo looks."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectVersion]:
        """Current versions under ``prefix`` (removed keys are absent), in
        UTF-8 byte order of keys."""
        ...

    def key_prefix(self, prefix: str) -> str:
        """The object keys ``list(prefix)`` covers start with this."""
        ...

    async def open(self, obj: ObjectVersion) -> ObjectReader: ...

    async def refresh(self, obj: ObjectVersion) -> ObjectVersion | None:
        """The key's current version (after ``obj`` was superseded), None if gone."""
        ...

    async def close(self) -> None: ...


def make_origin(settings: Settings) -> Origin:
    from replicator.config import FsSourceSettings  # noqa: PLC0415 - keep the imports light

    if isinstance(settings.source, FsSourceSettings):
        from replicator.origins.fs import FsOrigin  # noqa: PLC0415

        return FsOrigin(settings.source.path, settings.source.bucket)
    from replicator.origins.s3 import S3Origin  # noqa: PLC0415

    assert settings.origin is not None  # guaranteed by Settings' cross-checks
    return S3Origin(settings.source.bucket, settings.source.prefix, settings.origin)
