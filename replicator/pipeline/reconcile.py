"""What a peer already holds, read from its manifests.

- ``held_at``: is a listed version already replicated at a peer? A cheap
  check made before reading the object: the manifests of that key at that
  event time are listed (names start with it; usually none or one) and
  compared on identity. A filesystem version's ETag is its BLAKE3, unknown
  before reading, so files compare on size, ctime, mtime and inode (borg's
  files-cache rule); S3 versions compare on version id, ETag and size.
  When it is not held, ``held_at`` also gives the observation number the new
  manifest takes: after every manifest of that key at that same event time
  (S3 times are whole seconds), so listing order stays version order.
- ``keys_at_peer``: the keys a peer has manifests for, with the newest
  version name of each, streamed from the listing (bounded memory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from replicator.errors import NotFoundError
from replicator.origins import ObjectVersion, Origin
from replicator.store.backend import Backend
from replicator.store.bulk import get_under, list_names
from replicator.store.format import (
    Manifest,
    SourceIdentity,
    manifest_key,
    manifest_prefix,
    parse_manifest_key,
)
from replicator.store.versions import version_order


def identity_of(origin: Origin, obj: ObjectVersion, etag: str, observed: int = 0) -> SourceIdentity:
    return SourceIdentity(
        source=origin.source_id,
        bucket=origin.bucket,
        key=obj.key,
        version_id=obj.version_id,
        etag=etag,
        size=obj.size,
        event_time_ns=obj.event_time_ns,
        mtime_ns=obj.mtime_ns,
        inode=obj.inode,
        observed=observed,
    )


@dataclass(frozen=True, slots=True)
class Held:
    held: bool
    #: Observation number for a new manifest of this version (when not held).
    observed: int = 0


async def held_at(backend: Backend, origin: Origin, obj: ObjectVersion) -> Held:
    return (await held_many(backend, origin, [obj]))[0]


async def held_many(backend: Backend, origin: Origin, objs: Sequence[ObjectVersion]) -> list[Held]:
    """``held_at`` of each object, with the peer's manifests of them all read
    in one batch (one thread hop on a filesystem peer instead of a listing
    and a read per object: an unchanged re-run is mostly this)."""
    prefixes = [manifest_key(origin.bucket, o.key, f"{o.event_time_ns:020d}-") for o in objs]
    found = await get_under(backend, prefixes)
    return [_held(origin, o, entries) for o, entries in zip(objs, found, strict=True)]


def _held(origin: Origin, obj: ObjectVersion, entries: list[tuple[str, bytes]]) -> Held:
    observed = -1
    for _, data in entries:
        m = Manifest.from_bytes(data)
        if same_version(m, origin, obj):
            return Held(True)
        observed = max(observed, m.identity.observed)
    return Held(False, observed + 1)


async def holds_version(backend: Backend, origin: Origin, obj: ObjectVersion) -> bool:
    return (await held_at(backend, origin, obj)).held


def same_version(m: Manifest, origin: Origin, obj: ObjectVersion) -> bool:
    """Does manifest ``m`` record the listed version ``obj``?"""
    i = m.identity
    return (
        not m.removed
        and (i.source, i.bucket, i.key, i.version_id)
        == (origin.source_id, origin.bucket, obj.key, obj.version_id)
        and (i.size, i.event_time_ns) == (obj.size, obj.event_time_ns)
        # A manifest written without them (format 1, or from an event that
        # did not stat the file) still matches on size and ctime.
        and i.mtime_ns in (None, obj.mtime_ns)
        and i.inode in (None, obj.inode)
        and (origin.etag_is_digest or i.etag == obj.etag)
    )


async def read_manifest(backend: Backend, key: str) -> Manifest | None:
    try:
        return Manifest.from_bytes(await backend.get(key))
    except NotFoundError:
        return None


async def keys_at_peer(
    backend: Backend, bucket: str, key_prefix: str
) -> AsyncIterator[tuple[str, str]]:
    """(key, store name of its newest manifest) for every key under the prefix,
    in the peer's listing order (escaped names, not key order).

    A key's manifests list together (its escaped name is followed by '/');
    the newest is the greatest by ``version_order`` (the last listed in a
    version-2 store). Names that are not manifests are skipped."""
    current: tuple[str, str, tuple[object, ...]] | None = None
    parsed: tuple[str, str | None] = ("", None)  # (key directory, its key)
    async for store_key in list_names(backend, manifest_prefix(bucket, key_prefix)):
        where, _, name = store_key.rpartition("/")
        if where != parsed[0]:  # a key's versions list together: parse it once
            try:
                parsed = (where, parse_manifest_key(store_key)[1])
            except ValueError:
                parsed = (where, None)  # stray objects; verify reports them
        key = parsed[1]
        order = version_order(name)
        if key is None or order is None or not key.startswith(key_prefix):
            continue
        if current is not None and current[0] != key:
            yield current[0], current[1]
            current = None
        if current is None or order > current[2]:
            current = (key, store_key, order)
    if current is not None:
        yield current[0], current[1]
