"""The manifests of one peer, whatever the store format keeps them in.

Every manifest read and write goes through a :class:`ManifestStore`, one
per opened peer (``Peer.manifests``), so that a store format that keeps
manifests differently (format 3: many keys' manifests in content-addressed
segments, store/segment_store.py) only adds an implementation.

Vocabulary:

- *entry*: a :class:`VersionEntry`, one stored manifest named by its
  (bucket, key, version name), before its bytes are read.
- *listing order*: (bucket, escaped key, version order), the order
  ``backend.list("manifests/...")`` gives a format 2 store. Every iterator
  here is in that order and paged: never a whole peer in memory.
- *ref*: a string naming an entry (``entry_ref``), for what is carried as
  text (spilled pairs, restore's queue); ``entry_of_ref`` turns it back.

:class:`ObjectManifests` is formats 1 and 2: one object per manifest,
``manifests/<bucket>/<escaped key>/<version name>``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from replicator.store.backend import Backend
from replicator.store.bulk import PutItem, get_under, holds_any, list_names, put_many_if_absent
from replicator.store.format import Manifest, StoreConfig
from replicator.store.names import (
    MANIFESTS,
    decode_segment,
    encode_segment,
    manifest_key,
    manifest_prefix,
    parse_manifest_key,
)
from replicator.store.versions import VersionEntry, VersionOrder, version_order

if TYPE_CHECKING:
    from replicator.store.heads import Head

__all__ = [
    "ManifestStore",
    "ObjectManifests",
    "VersionEntry",
    "entry_of_ref",
    "entry_ref",
    "grouped",
    "holds_manifests",
    "manifest_store",
    "manifests_of",
    "register_peer",
]

log = logging.getLogger(__name__)


@runtime_checkable
class ManifestStore(Protocol):
    """The manifests of one peer (see the module doc for the vocabulary)."""

    backend: Backend

    async def put_many(self, manifests: Sequence[Manifest]) -> list[bool | BaseException]:
        """Put-if-absent of each manifest under its (bucket, key, version name):
        per manifest True (written), False (that version's manifest is already
        there) or that manifest's own exception. Durable when it returns."""
        ...

    def list_versions(
        self, bucket: str, key_prefix: str = "", *, exact: bool = False
    ) -> AsyncIterator[tuple[str, list[VersionEntry]]]:
        """(key, its versions oldest first) of every key under ``key_prefix``
        (only the key equal to it with ``exact``); names that are not version
        names are left out (``entries`` yields them, for verify)."""
        ...

    def entries(
        self, bucket: str | None = None, key_prefix: str = ""
    ) -> AsyncIterator[VersionEntry]:
        """Every stored manifest of ``bucket`` under ``key_prefix`` (of every
        bucket when ``bucket`` is None), including names that are not
        version names (verify reports them)."""
        ...

    def latest(self, bucket: str, key_prefix: str = "") -> AsyncIterator[tuple[str, VersionEntry]]:
        """(key, its newest manifest) of every key under ``key_prefix``."""
        ...

    async def versions_at(
        self, bucket: str, wanted: Sequence[tuple[str, str]]
    ) -> list[list[tuple[VersionEntry, bytes]]]:
        """Per (key, version-name prefix): the manifests of exactly that key
        whose version name starts with the prefix, with their bytes."""
        ...

    async def read(self, entry: VersionEntry) -> bytes:
        """The manifest's bytes; NotFoundError when it is gone."""
        ...


class ObjectManifests:
    """Formats 1 and 2: each manifest is one object named by its identity."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def put_many(self, manifests: Sequence[Manifest]) -> list[bool | BaseException]:
        items: list[PutItem] = []
        for m in manifests:
            data = m.to_bytes()
            items.append((m.store_key(), data, hashlib.sha256(data).digest()))
        # A filesystem peer writes the batch in one thread hop, durable
        # together; others get its conditional PUTs in flight at once.
        return list(await put_many_if_absent(self.backend, items))

    async def put_texts(
        self, texts: Sequence[tuple[str, str, str, bytes, Head]]
    ) -> list[bool | BaseException]:
        """``put_many`` of manifests already written out: (bucket, key,
        version name, bytes, head) each (``pipeline.manifests.CreatedTexts``)."""
        items: list[PutItem] = [
            (manifest_key(b, k, v), data, hashlib.sha256(data).digest())
            for b, k, v, data, _ in texts
        ]
        return list(await put_many_if_absent(self.backend, items))

    async def list_versions(
        self, bucket: str, key_prefix: str = "", *, exact: bool = False
    ) -> AsyncIterator[tuple[str, list[VersionEntry]]]:
        if exact:
            prefix = manifest_prefix(bucket) + encode_segment(key_prefix) + "/"
        else:
            prefix = manifest_prefix(bucket, key_prefix)
        async for key, versions in grouped(self._entries(prefix)):
            if key.startswith(key_prefix) and (not exact or key == key_prefix):
                yield key, versions

    def entries(
        self, bucket: str | None = None, key_prefix: str = ""
    ) -> AsyncIterator[VersionEntry]:
        if bucket is None and key_prefix:
            raise ValueError("a key prefix needs a bucket")
        prefix = MANIFESTS if bucket is None else manifest_prefix(bucket, key_prefix)
        return self._entries(prefix)

    async def _entries(self, prefix: str) -> AsyncIterator[VersionEntry]:
        async for info in self.backend.list(prefix):
            try:
                bucket, key, version = parse_manifest_key(info.key)
            except ValueError:
                # A stray object (not written by replicator): reported, skipped.
                log.warning(
                    "destination %r: skipped %s: not a manifest name", self.backend.name, info.key
                )
                continue
            yield VersionEntry(info.key, key, version, bucket)

    async def latest(
        self, bucket: str, key_prefix: str = ""
    ) -> AsyncIterator[tuple[str, VersionEntry]]:
        # A key's manifests list together (its escaped name is followed by
        # '/'): its directory is parsed once, its newest is the greatest by
        # version_order (the last listed in a version-2 store).
        current: tuple[str, str, str, VersionOrder] | None = None  # key, store key, name
        parsed: tuple[str, str | None] = ("", None)  # (key directory, its key)
        async for store_key in list_names(self.backend, manifest_prefix(bucket, key_prefix)):
            where, _, name = store_key.rpartition("/")
            if where != parsed[0]:
                try:
                    parsed = (where, parse_manifest_key(store_key)[1])
                except ValueError:
                    parsed = (where, None)  # stray objects; verify reports them
            key, order = parsed[1], version_order(name)
            if key is None or order is None or not key.startswith(key_prefix):
                continue
            if current is not None and current[0] != key:
                yield current[0], VersionEntry(current[1], current[0], current[2], bucket)
                current = None
            if current is None or order > current[3]:
                current = (key, store_key, name, order)
        if current is not None:
            yield current[0], VersionEntry(current[1], current[0], current[2], bucket)

    async def versions_at(
        self, bucket: str, wanted: Sequence[tuple[str, str]]
    ) -> list[list[tuple[VersionEntry, bytes]]]:
        prefixes = [manifest_key(bucket, key, prefix) for key, prefix in wanted]
        found = await get_under(self.backend, prefixes)
        out: list[list[tuple[VersionEntry, bytes]]] = []
        for (key, _), prefix, objects in zip(wanted, prefixes, found, strict=True):
            directory = prefix.rpartition("/")[0]
            out.append(
                [
                    (VersionEntry(store_key, key, name, bucket), data)
                    for store_key, data in objects
                    # Only that key's own directory (a longer key's split
                    # name may continue below it).
                    if (split := store_key.rpartition("/"))[0] == directory and (name := split[2])
                ]
            )
        return out

    async def read(self, entry: VersionEntry) -> bytes:
        return await self.backend.get(entry.store_key)


async def grouped(
    entries: AsyncIterator[VersionEntry],
) -> AsyncIterator[tuple[str, list[VersionEntry]]]:
    """(key, versions oldest first) from entries listed key by key; names
    that are not version names are left out (verify reports them)."""
    current = ""
    group: list[VersionEntry] = []
    async for entry in entries:
        if version_order(entry.version_name) is None:
            continue
        if entry.key != current and group:
            yield current, sorted(group, key=_order)
            group = []
        current = entry.key
        group.append(entry)
    if group:
        yield current, sorted(group, key=_order)


def _order(entry: VersionEntry) -> VersionOrder:
    order = version_order(entry.version_name)
    assert order is not None  # grouped keeps only version names
    return order


async def holds_manifests(
    store: Backend | ManifestStore, bucket: str, key_prefix: str = ""
) -> bool:
    """Does the peer hold any manifest of ``bucket`` under ``key_prefix``?"""
    manifests = manifests_of(store)
    if isinstance(manifests, ObjectManifests):  # one short page of names, no sizes
        return await holds_any(manifests.backend, manifest_prefix(bucket, key_prefix))
    holds = getattr(manifests, "holds", None)
    if holds is not None:  # format 3: one row of its header table
        return bool(await holds(bucket, key_prefix))
    entries = manifests.entries(bucket, key_prefix)
    try:
        return await anext(entries, None) is not None
    finally:
        close = getattr(entries, "aclose", None)
        if close is not None:
            await close()


async def holds_manifests_under(backend: Backend, prefix: str) -> bool | None:
    """``holds_manifests`` for a raw ``manifest_prefix`` string handed to a
    peer whose manifests are not objects under it (format 3); None when the
    listing under ``prefix`` itself answers (formats 1 and 2). A bridge for
    callers still asking ``bulk.holds_any`` about manifests: on a format 3
    peer that listing is always empty, and no removal pass would run."""
    manifests = manifests_of(backend)
    parsed = split_manifest_prefix(prefix)
    if isinstance(manifests, ObjectManifests) or parsed is None:
        return None
    return await holds_manifests(manifests, *parsed)


def split_manifest_prefix(prefix: str) -> tuple[str, str] | None:
    """(bucket, key prefix) that ``manifest_prefix`` made ``prefix`` of; None
    when it is not such a prefix (no bucket name ended by '/')."""
    if not prefix.startswith(MANIFESTS):
        return None
    parts = prefix.removeprefix(MANIFESTS).split("/")
    # A long bucket name continues in pieces marked '+' (which escaping never
    # starts a name with); the first other segment begins the key prefix.
    n = 1
    while n < len(parts) and parts[n].startswith("+"):
        n += 1
    if n >= len(parts) or not parts[0]:
        return None
    try:
        return decode_segment("/".join(parts[:n])), decode_segment("/".join(parts[n:]))
    except UnicodeDecodeError:
        return None


def entry_ref(entry: VersionEntry) -> str:
    """A string naming ``entry`` that ``entry_of_ref`` turns back: the object
    name in formats 1 and 2 (what these strings always were), a JSON list
    when the entry has a place in a segment (store names never start '[')."""
    if entry.where is None:
        return entry.store_key
    segment, offset, length = entry.where
    fields = [entry.store_key, entry.key, entry.version_name, entry.bucket, segment, offset, length]
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))


def entry_of_ref(ref: str) -> VersionEntry:
    """The entry ``entry_ref`` named; ValueError for a string it never gives."""
    if ref.startswith("["):
        store_key, key, name, bucket, segment, offset, length = json.loads(ref)
        return VersionEntry(store_key, key, name, bucket, (segment, int(offset), int(length)))
    bucket, key, name = parse_manifest_key(ref)
    return VersionEntry(ref, key, name, bucket)


def manifest_store(
    backend: Backend, config: StoreConfig, *, cache: Path | None = None
) -> ManifestStore:
    """The ManifestStore of a peer whose ``config`` is ``config``, over ``backend``.

    Cheap to call per operation: an implementation that keeps state (a
    header cache) keeps it per peer itself (format 3: in the file ``cache``,
    when the first call for that peer names one)."""
    if config.version in (1, 2):
        return ObjectManifests(backend)
    if config.version == 3:
        from replicator.store.segment_store import segment_store  # noqa: PLC0415 - imports this

        return segment_store(backend, config, cache)
    raise ValueError(f"no manifest store for store format {config.version}")


#: The config of each opened peer's backend (``register_peer``), so that a
#: caller handing a bare Backend of a peer still gets that peer's format.
_opened: weakref.WeakKeyDictionary[object, StoreConfig] = weakref.WeakKeyDictionary()


def register_peer(backend: Backend, config: StoreConfig) -> None:
    _opened[backend] = config


def manifests_of(where: Backend | ManifestStore) -> ManifestStore:
    """``where`` itself when it is a ManifestStore; for a Backend, the store
    of the peer it belongs to (it, or a wrapper around it, was opened as a
    peer: a counting wrapper keeps counting), else formats 1 and 2."""
    if _is_store(type(where)):
        return cast(ManifestStore, where)
    inner: object = where
    while inner is not None:
        config = _opened.get(inner)
        if config is not None:
            return manifest_store(cast(Backend, where), config)
        inner = getattr(inner, "inner", None)
    return ObjectManifests(cast(Backend, where))


@functools.cache
def _is_store(cls: type) -> bool:
    # Once per class: isinstance against a runtime-checkable protocol costs
    # ~90 us, and readers pass through here once per manifest.
    return all(callable(getattr(cls, name, None)) for name in _STORE_METHODS)


_STORE_METHODS = ("put_many", "list_versions", "entries", "latest", "versions_at", "read")
