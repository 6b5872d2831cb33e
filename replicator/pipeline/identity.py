"""What the daemon records for an event: the manifest identity of a version.

The identity of a version must be the one a listing of the same version
gives (``pipeline.reconcile.identity_of``), so that backfill, the daemon's
reconcile and the daemon's events all write one manifest name for it, never
a second copy.
"""

from __future__ import annotations

from replicator.errors import NotFoundError
from replicator.events import ChangeEvent
from replicator.store.backend import Backend
from replicator.store.format import Manifest, SourceIdentity
from replicator.store.manifest_store import ManifestStore, manifests_of


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
        mtime_ns=event.mtime_ns,
        inode=event.inode,
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


async def newest_manifest(store: Backend | ManifestStore, bucket: str, key: str) -> Manifest | None:
    """The newest manifest of exactly ``key``; None when it has none (or it
    was removed since the listing)."""
    manifests = manifests_of(store)
    newest = None
    async for _, versions in manifests.list_versions(bucket, key, exact=True):
        newest = versions[-1]
    if newest is None:
        return None
    try:
        return Manifest.from_bytes(await manifests.read(newest))
    except NotFoundError:
        return None
