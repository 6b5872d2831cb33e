"""Batched operations over many small objects, for backends that can do
them in one request (the filesystem backend: one thread hop and one group
commit per batch), with a per-object fallback for those that cannot.

A backend (or wrapper) offers a batch by having a method of the same name:

- ``get_under(prefixes)``: every object under each prefix, with its bytes;
  what a re-run reads to find the manifests a peer already holds.
- ``put_many_if_absent(items)``: ``put_if_absent`` of each item, each
  answering True/False or the error of that item alone; all durable when
  it returns (the filesystem makes them durable together).
- ``list_names(prefix)``: the names ``list`` gives, without their sizes
  (a filesystem then needs no stat per object: the removal pass lists
  every manifest of a peer).

Wrappers (retry, counting) forward a batch to their inner backend when it
has one, so no wrapper hides it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from replicator.errors import NotFoundError
from replicator.store.backend import Backend, Payload
from replicator.store.names import MANIFESTS

#: One item of a batched put: key, bytes, expected sha256 (or None).
PutItem = tuple[str, Payload, bytes | None]
#: What a batched put answers per item: written, present, or its own error.
PutOutcome = bool | Exception


def has_batch(backend: object, name: str) -> bool:
    return callable(getattr(backend, name, None))


async def get_under(backend: Backend, prefixes: Sequence[str]) -> list[list[tuple[str, bytes]]]:
    """(key, bytes) of every object under each prefix, in listing order."""
    batch = getattr(backend, "get_under", None)
    if callable(batch):
        found: list[list[tuple[str, bytes]]] = await batch(prefixes)
        return found
    return list(await asyncio.gather(*(under_one(backend, p) for p in prefixes)))


async def holds_any(backend: Backend, prefix: str) -> bool:
    """Is there any object under ``prefix``? (one short listing page)

    A manifests prefix is answered by the peer's ManifestStore when its
    manifests are not objects under it (format 3 keeps them in segments)."""
    if prefix.startswith(MANIFESTS):
        # Imported here: manifest_store imports this module.
        from replicator.store.manifest_store import holds_manifests_under  # noqa: PLC0415

        if (held := await holds_manifests_under(backend, prefix)) is not None:
            return held
    names = list_names(backend, prefix)
    try:
        return await anext(names, None) is not None
    finally:
        await names.aclose()


async def list_names(backend: Backend, prefix: str) -> AsyncGenerator[str, None]:
    """The keys under ``prefix`` in listing order (``list`` without sizes)."""
    batch = getattr(backend, "list_names", None)
    if callable(batch):
        async for name in batch(prefix):
            yield name
        return
    async for info in backend.list(prefix):
        yield info.key


async def under_one(backend: Backend, prefix: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    async for info in backend.list(prefix):
        try:
            out.append((info.key, await backend.get(info.key)))
        except NotFoundError:
            continue  # removed between the listing and the read
    return out


async def put_many_if_absent(backend: Backend, items: Sequence[PutItem]) -> list[PutOutcome]:
    """put_if_absent of every item; an item's error is its answer, not raised.

    Without a batch method the puts run concurrently (an S3 peer gets them
    all in flight at once, up to its connection pool)."""
    batch = getattr(backend, "put_many_if_absent", None)
    if callable(batch):
        done: list[PutOutcome] = await batch(items)
        return done
    return await put_each(backend, items)


async def put_each(backend: Backend, items: Sequence[PutItem]) -> list[PutOutcome]:
    """The puts of a batch as concurrent single puts (a backend without batches)."""
    results: list[Any] = await asyncio.gather(
        *(backend.put_if_absent(k, d, sha256=h) for k, d, h in items), return_exceptions=True
    )
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r  # cancellation and the like are not one item's answer
    return results
