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
- ``keys_at_peer``: the keys a peer has manifests for, with a ref of the
  newest manifest of each, streamed from the listing (bounded memory).
- ``newest_at_peer``: the same with whether each is a removal, when the
  store knows it without reading the manifest (format 3's header table).

Every read goes through the peer's ManifestStore (store/manifest_store.py):
these functions take it, or a Backend of an opened peer (``manifests_of``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Container, Sequence

from replicator.errors import NotFoundError
from replicator.origins import ObjectVersion, Origin
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.format import Manifest, SourceIdentity
from replicator.store.heads import Head, head_of, manifest_head
from replicator.store.manifest_store import (
    ManifestStore,
    VersionEntry,
    entry_of_ref,
    entry_ref,
    manifests_of,
)


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


@record(frozen=True, slots=True)
class Held:
    held: bool
    #: Observation number for a new manifest of this version (when not held).
    observed: int = 0


HELD = Held(True)


async def held_at(store: Backend | ManifestStore, origin: Origin, obj: ObjectVersion) -> Held:
    return (await held_many(store, origin, [obj]))[0]


async def held_many(
    store: Backend | ManifestStore, origin: Origin, objs: Sequence[ObjectVersion]
) -> list[Held]:
    """``held_at`` of each object, with the peer's manifests of them all read
    in one batch (one thread hop on a filesystem peer instead of a listing
    and a read per object: an unchanged re-run is mostly this). A format 3
    peer answers from the heads its header table keeps (``heads_at``),
    reading and parsing no manifest it has seen before."""
    found = await _heads(manifests_of(store), origin.bucket, objs)
    return [_held(origin, o, heads) for o, heads in zip(objs, found, strict=True)]


async def _heads(
    manifests: ManifestStore, bucket: str, objs: Sequence[ObjectVersion]
) -> list[list[Head]]:
    """The heads of the manifests of each object's key at its event time."""
    wanted = [(o.key, f"{o.event_time_ns:020d}-") for o in objs]
    heads_at = getattr(manifests, "heads_at", None)
    if heads_at is not None:
        found: list[list[Head]] = await heads_at(bucket, wanted)
        return found
    entries = await manifests.versions_at(bucket, wanted)
    return [[head_of(*manifest_head(data)) for _, data in found] for found in entries]


def _held(origin: Origin, obj: ObjectVersion, heads: list[Head]) -> Held:
    observed = -1
    for head in heads:
        if same_head(head, origin, obj):
            return HELD
        observed = max(observed, head[10])
    return Held(False, observed + 1)


async def holds_version(store: Backend | ManifestStore, origin: Origin, obj: ObjectVersion) -> bool:
    return (await held_at(store, origin, obj)).held


def same_version(m: Manifest, origin: Origin, obj: ObjectVersion) -> bool:
    """Does manifest ``m`` record the listed version ``obj``?"""
    return same_identity(m.removed, m.identity, origin, obj)


def same_identity(removed: bool, i: SourceIdentity, origin: Origin, obj: ObjectVersion) -> bool:
    """``same_version`` from a manifest's head (``manifest_head``)."""
    return same_head(head_of(removed, i), origin, obj)


def same_head(head: Head, origin: Origin, obj: ObjectVersion) -> bool:
    """Does the manifest whose head is ``head`` record the listed ``obj``?"""
    removed, source, bucket, key, version_id, etag, size, when, mtime, inode, _ = head
    return (
        not removed
        and (source, bucket, key, version_id)
        == (origin.source_id, origin.bucket, obj.key, obj.version_id)
        and (size, when) == (obj.size, obj.event_time_ns)
        # A manifest written without them (format 1, or from an event that
        # did not stat the file) still matches on size and ctime.
        and mtime in (None, obj.mtime_ns)
        and inode in (None, obj.inode)
        and (origin.etag_is_digest or etag == obj.etag)
    )


async def read_manifest(store: Backend | ManifestStore, key: str) -> Manifest | None:
    """The manifest a ref names (``keys_at_peer`` gives them), None when gone."""
    return await read_entry(store, entry_of_ref(key))


async def read_head(
    store: Backend | ManifestStore, entry: VersionEntry
) -> tuple[bool, SourceIdentity] | None:
    """(removed, identity) of ``entry``'s manifest (``manifest_head``), None
    when it is gone: what the removal pass and ``verify --against-source``
    compare, without the chunk list."""
    try:
        return manifest_head(await manifests_of(store).read(entry))
    except NotFoundError:
        return None


async def read_entry(store: Backend | ManifestStore, entry: VersionEntry) -> Manifest | None:
    """The manifest of ``entry``, None when it is gone."""
    try:
        return Manifest.from_bytes(await manifests_of(store).read(entry))
    except NotFoundError:
        return None


async def keys_at_peer(
    store: Backend | ManifestStore, bucket: str, key_prefix: str
) -> AsyncIterator[tuple[str, str]]:
    """(key, ref of its newest manifest) for every key under the prefix, in
    the peer's listing order (escaped names, not key order). The ref is the
    manifest's object name in formats 1 and 2 (``entry_ref``); names that
    are not manifests are skipped."""
    async for key, entry in manifests_of(store).latest(bucket, key_prefix):
        yield key, entry_ref(entry)


async def newest_at_peer(
    store: Backend | ManifestStore, bucket: str, key_prefix: str, *, skip: Container[str] = ()
) -> AsyncIterator[tuple[str, VersionEntry | None, bool | None]]:
    """(key, its newest manifest, whether that is a removal or None when not
    known without reading it) for every key under the prefix: in key order
    from a store that keeps its manifests' heads (format 3, ``latest_heads``),
    in listing order from the others. Keys in ``skip`` come with None for
    both (the caller only counts them: no entry is made for them)."""
    manifests = manifests_of(store)
    latest_heads = getattr(manifests, "latest_heads", None)
    if latest_heads is not None:
        async for item in latest_heads(bucket, key_prefix, skip=skip):
            yield item
        return
    async for key, entry in manifests.latest(bucket, key_prefix):
        yield key, (None if key in skip else entry), None
