"""What the daemon records for an event: the manifest identity of a version.

The identity of a version must be the one a listing of the same version
gives (``pipeline.reconcile.identity_of``), so that backfill, the daemon's
reconcile and the daemon's events all write one manifest name for it, never
a second copy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from replicator.events import ChangeEvent
from replicator.pipeline.reconcile import read_manifest
from replicator.store.backend import Backend
from replicator.store.format import Manifest, SourceIdentity, manifest_key

#: SourceIdentity gains ``mtime_ns`` and ``inode`` with the data-safety work
#: (store format v2); until that is merged here, they are passed only when
#: the class has them. Once both are in, pass them directly.
_IDENTITY_FIELDS = frozenset(f.name for f in dataclasses.fields(SourceIdentity))


def version_identity(
    event: ChangeEvent, size: int, digest: bytes, *, etag_is_digest: bool
) -> SourceIdentity:
    return SourceIdentity(
        source=event.source,
        bucket=event.bucket,
        key=event.key,
        version_id=event.version_id,
        etag=digest.hex() if etag_is_digest else event.etag,
        size=size,
        event_time_ns=event.event_time_ns,
        sequencer=event.sequencer,
        **_file_metadata(event),
    )


def removal_identity(event: ChangeEvent, when_ns: int) -> SourceIdentity:
    """A tombstone's identity; ``when_ns`` sorts it after the version it removes."""
    return SourceIdentity(
        source=event.source,
        bucket=event.bucket,
        key=event.key,
        version_id="",
        etag="",
        size=0,
        event_time_ns=when_ns,
    )


def _file_metadata(event: ChangeEvent) -> dict[str, Any]:
    found = {"mtime_ns": event.mtime_ns, "inode": event.inode}
    return {k: v for k, v in found.items() if k in _IDENTITY_FIELDS and v is not None}


async def newest_manifest(backend: Backend, bucket: str, key: str) -> Manifest | None:
    """The newest manifest of exactly ``key`` (names sort by version order)."""
    newest = None
    async for info in backend.list(manifest_key(bucket, key, "")):
        newest = info.key
    return None if newest is None else await read_manifest(backend, newest)
