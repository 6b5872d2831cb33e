"""What a peer already holds, read from its manifests.

- ``holds_version``: is a listed version already replicated at a peer? A
  cheap check made before reading the object. When the ETag is the
  object's own (S3), the manifest name is known and one HEAD answers. A
  filesystem version's ETag is its BLAKE3, unknown before reading, so the
  manifests of that key at that event time are listed (names start with
  it) and compared on size and identity, like rsync's size+mtime check.
- ``keys_at_peer``: the keys a peer has manifests for, with the newest
  version name of each, streamed from the listing (bounded memory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from replicator.errors import NotFoundError
from replicator.origins import ObjectVersion, Origin
from replicator.store.backend import Backend
from replicator.store.format import (
    Manifest,
    SourceIdentity,
    manifest_key,
    manifest_prefix,
    parse_manifest_key,
)


def identity_of(origin: Origin, obj: ObjectVersion, etag: str) -> SourceIdentity:
    return SourceIdentity(
        source=origin.source_id,
        bucket=origin.bucket,
        key=obj.key,
        version_id=obj.version_id,
        etag=etag,
        size=obj.size,
        event_time_ns=obj.event_time_ns,
    )


async def holds_version(backend: Backend, origin: Origin, obj: ObjectVersion) -> bool:
    if not origin.etag_is_digest:
        ident = identity_of(origin, obj, obj.etag)
        key = manifest_key(origin.bucket, obj.key, ident.version_name(False))
        return await backend.head(key) is not None
    prefix = manifest_key(origin.bucket, obj.key, f"{obj.event_time_ns:020d}-")
    async for info in backend.list(prefix):
        found = await read_manifest(backend, info.key)
        if found is not None and _same_version(found, origin, obj):
            return True
    return False


def _same_version(m: Manifest, origin: Origin, obj: ObjectVersion) -> bool:
    i = m.identity
    return (
        not m.removed
        and (i.source, i.bucket, i.key, i.version_id)
        == (origin.source_id, origin.bucket, obj.key, obj.version_id)
        and (i.size, i.event_time_ns) == (obj.size, obj.event_time_ns)
    )


async def read_manifest(backend: Backend, key: str) -> Manifest | None:
    try:
        return Manifest.from_bytes(await backend.get(key))
    except NotFoundError:
        return None


async def keys_at_peer(
    backend: Backend, bucket: str, key_prefix: str
) -> AsyncIterator[tuple[str, str]]:
    """(key, store name of its newest manifest) for every key under the prefix.

    A key's manifests list together (its escaped name is followed by '/'),
    and version names sort by event time, so the newest is the last one."""
    current: tuple[str, str] | None = None
    async for info in backend.list(manifest_prefix(bucket, key_prefix)):
        _, key, _ = parse_manifest_key(info.key)
        if current is not None and current[0] != key:
            yield current
        current = (key, info.key)
    if current is not None:
        yield current
