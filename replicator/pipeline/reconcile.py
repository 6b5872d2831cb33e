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

Every read goes through the peer's ManifestStore (store/manifest_store.py):
these functions take it, or a Backend of an opened peer (``manifests_of``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from replicator.errors import NotFoundError
from replicator.origins import ObjectVersion, Origin
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.format import Manifest, SourceIdentity
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


async def held_at(store: Backend | ManifestStore, origin: Origin, obj: ObjectVersion) -> Held:
    return (await held_many(store, origin, [obj]))[0]


async def held_many(
    store: Backend | ManifestStore, origin: Origin, objs: Sequence[ObjectVersion]
) -> list[Held]:
    """``held_at`` of each object, with the peer's manifests of them all read
    in one batch (one thread hop on a filesystem peer instead of a listing
    and a read per object: an unchanged re-run is mostly this)."""
    wanted = [(o.key, f"{o.event_time_ns:020d}-") for o in objs]
    found = await manifests_of(store).versions_at(origin.bucket, wanted)
    return [_held(origin, o, entries) for o, entries in zip(objs, found, strict=True)]


def _held(origin: Origin, obj: ObjectVersion, entries: list[tuple[VersionEntry, bytes]]) -> Held:
    observed = -1
    for _, data in entries:
        removed, identity = manifest_head(data)
        if same_identity(removed, identity, origin, obj):
            return Held(True)
        observed = max(observed, identity.observed)
    return Held(False, observed + 1)


async def holds_version(store: Backend | ManifestStore, origin: Origin, obj: ObjectVersion) -> bool:
    return (await held_at(store, origin, obj)).held


def same_version(m: Manifest, origin: Origin, obj: ObjectVersion) -> bool:
    """Does manifest ``m`` record the listed version ``obj``?"""
    return same_identity(m.removed, m.identity, origin, obj)


def same_identity(removed: bool, i: SourceIdentity, origin: Origin, obj: ObjectVersion) -> bool:
    """``same_version`` from a manifest's head (``manifest_head``)."""
    return (
        not removed
        and (i.source, i.bucket, i.key, i.version_id)
        == (origin.source_id, origin.bucket, obj.key, obj.version_id)
        and (i.size, i.event_time_ns) == (obj.size, obj.event_time_ns)
        # A manifest written without them (format 1, or from an event that
        # did not stat the file) still matches on size and ctime.
        and i.mtime_ns in (None, obj.mtime_ns)
        and i.inode in (None, obj.inode)
        and (origin.etag_is_digest or i.etag == obj.etag)
    )


#: Where a manifest's ``kind`` and ``object`` are: every writer serialises
#: with sorted keys (chunker, digest, kind, object, runs, version), and an
#: unescaped '"' cannot follow ',' inside a JSON string, so these markers
#: only occur between the top-level members.
_KIND = b',"kind":"'
_OBJECT_START = b'","object":{'
_OBJECT_END = b'},"runs":['
_KINDS = {b"created": False, b"removed": True}
#: How a complete manifest ends (a torn one is parsed whole, and refused).
_ENDS = (b'],"version":2}', b'],"version":1}')


def manifest_head(data: bytes) -> tuple[bool, SourceIdentity]:
    """(removed, identity) of a manifest's bytes, parsing only its ``object``
    (a re-run's held check reads one manifest per file; a large file's lists
    thousands of chunks). Bytes not laid out as written are parsed whole, so
    a malformed or torn manifest is still an IntegrityError (damage inside
    the chunk list or the digest is verify's to find)."""
    kind_at = data.find(_KIND)
    start = data.find(_OBJECT_START, kind_at)
    end = data.find(_OBJECT_END, start)
    removed = _KINDS.get(data[kind_at + len(_KIND) : start]) if kind_at > 0 else None
    if (
        removed is not None
        and end > 0
        and data.startswith(b'{"chunker":[')
        and data.endswith(_ENDS)
    ):
        try:
            return removed, SourceIdentity.from_json(json.loads(data[start + 11 : end + 1]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass  # not the layout it looked like: the whole parse says what is wrong
    m = Manifest.from_bytes(data)
    return m.removed, m.identity


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
