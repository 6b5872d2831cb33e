"""Opening a peer (destination): its backend, and its pinned store config.

A *peer* is one configured destination seen through the replica store: a
name, a backend (wrapped in bounded retries) and the StoreConfig read from
its ``config`` object. Both the write path (backfill, daemon) and the read
path (restore, verify) open peers here, so a store written with other
chunker parameters is refused the same way everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import field
from pathlib import Path

from replicator.config import FsDestinationSettings, S3DestinationSettings, Settings
from replicator.errors import CapabilityError, IncompatibleStoreError, NotFoundError
from replicator.records import record
from replicator.store.backend import Backend, Capabilities, sha256_of
from replicator.store.backends.fs import FsBackend
from replicator.store.backends.fs_probe import record_path as probe_record_path
from replicator.store.format import CONFIG_KEY, StoreConfig
from replicator.store.index_cache import cache_path, default_cache_dir, segment_cache_path
from replicator.store.manifest_store import ManifestStore, manifest_store, register_peer
from replicator.store.reader import location, parse_store_config
from replicator.store.retry import RetryingBackend, RetryPolicy


@record(frozen=True, slots=True)
class Peer:
    """One opened destination."""

    name: str
    backend: Backend
    config: StoreConfig
    #: Where the peer lives (type, endpoint, bucket/path); names its index cache.
    identity: str
    #: What the start-up probe found (peers opened for writing only).
    capabilities: Capabilities | None = None
    #: The local cache directory (``store.cache_dir``): a format 3 peer keeps
    #: its segment header table there; None: a temporary one for this run.
    cache_dir: Path | None = None
    #: Every manifest read and write of this peer goes through it.
    manifests: ManifestStore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self.cache_dir
        cache = None if where is None else segment_cache_path(where, self.identity)
        store = manifest_store(self.backend, self.config, cache=cache)
        object.__setattr__(self, "manifests", store)
        # A caller handing this peer's backend (or a wrapper of it) where a
        # ManifestStore is expected gets this format too (manifests_of).
        register_peer(self.backend, self.config)

    async def close(self) -> None:
        await self.backend.close()


def peer_identity(dest: FsDestinationSettings | S3DestinationSettings) -> str:
    if isinstance(dest, FsDestinationSettings):
        return f"fs:{Path(dest.path).resolve()}"
    return f"s3:{dest.endpoint_url or 'aws'}:{dest.region}:{dest.bucket}/{dest.prefix}"


def make_backend(
    dest: FsDestinationSettings | S3DestinationSettings, *, cache_dir: Path | None = None
) -> Backend:
    """The destination's backend inside the retry wrapper (not yet contacted).

    With ``cache_dir``, a filesystem peer's probe answer is kept there
    between runs (store/backends/fs_probe.py)."""
    if isinstance(dest, FsDestinationSettings):
        record = None
        if cache_dir is not None:
            record = probe_record_path(cache_path(cache_dir, peer_identity(dest)))
        inner: Backend = FsBackend(dest.path, dest.name, probe_record=record)
    else:
        # Imported here: aiobotocore costs ~1 s of start-up to runs without S3.
        from replicator.store.backends.s3 import S3Backend  # noqa: PLC0415

        prefix = dest.prefix if not dest.prefix or dest.prefix.endswith("/") else dest.prefix + "/"
        inner = S3Backend(
            dest.name,
            dest.bucket,
            prefix=prefix,
            endpoint_url=dest.endpoint_url,
            region=dest.region,
            addressing_style=dest.addressing_style,
            ca_bundle=str(dest.ca_bundle) if dest.ca_bundle is not None else None,
            connect_timeout=dest.connect_timeout,
            read_timeout=dest.read_timeout,
        )
        # A dead or hung endpoint fails after max_attempts timeouts, not minutes.
        return RetryingBackend(inner, RetryPolicy(attempts=dest.max_attempts))
    return RetryingBackend(inner)


async def open_peer(
    dest: FsDestinationSettings | S3DestinationSettings,
    store_cfg: StoreConfig,
    *,
    create: bool,
    cache_dir: Path | None = None,
) -> Peer:
    """Open ``dest`` and check that its store matches ``store_cfg``.

    With ``create`` a missing ``config`` is written (put_if_absent, so of two
    daemons creating one store at once, both end up agreeing on the
    winner's bytes). Without it a missing config is an error: reading from a
    path that is not a store must not silently look empty."""
    backend, identity = make_backend(dest, cache_dir=cache_dir), peer_identity(dest)
    name = dest.name
    return await peer_on(name, backend, store_cfg, identity, create=create, cache_dir=cache_dir)


async def peer_on(
    name: str,
    backend: Backend,
    store_cfg: StoreConfig,
    identity: str,
    *,
    create: bool,
    cache_dir: Path | None = None,
) -> Peer:
    """A Peer over an already built ``backend`` (closed again if the check fails)."""
    try:
        config = await _store_config(backend, name, store_cfg, create=create)
        capabilities = await _probe(backend, name) if create else None
    except BaseException:
        await backend.close()
        raise
    return Peer(name, backend, config, identity, capabilities, cache_dir)


async def _probe(backend: Backend, name: str) -> Capabilities:
    """The start-up capability probe of a peer about to be written to.

    Conditional writes are required: manifests and the store config are
    put-if-absent, which is what makes concurrent writers and replays safe.
    A server that does not verify checksums is allowed (moto does not), and
    is visible in the capabilities a backfill reports."""
    caps = await backend.probe()
    if not caps.put_if_absent:
        raise CapabilityError(
            f"destination {name!r} does not refuse a second conditional write "
            "(If-None-Match / put-if-absent): concurrent writers could replace "
            "manifests; use a server that supports conditional writes"
        )
    return caps


async def _store_config(
    backend: Backend, name: str, wanted: StoreConfig, *, create: bool
) -> StoreConfig:
    try:
        return _check(await backend.get(CONFIG_KEY), wanted, backend, name)
    except NotFoundError:
        if not create:
            raise IncompatibleStoreError(
                f"destination {name!r}: no {location(backend, CONFIG_KEY)}: not a replicator store"
            ) from None
    data = wanted.to_bytes()
    if await backend.put_if_absent(CONFIG_KEY, data, sha256=sha256_of(data)):
        return wanted
    # Someone else created it in between: theirs is the store's config.
    return _check(await backend.get(CONFIG_KEY), wanted, backend, name)


def _check(data: bytes, wanted: StoreConfig, backend: Backend, name: str) -> StoreConfig:
    found = parse_store_config(data, backend)
    # Only the chunker is pinned: compression is recorded per chunk, so a
    # store may hold both forms and changing store.compression is safe.
    found.check_matches(wanted, name)
    return found


def store_config(settings: Settings) -> StoreConfig:
    """The StoreConfig the configuration asks for."""
    store = settings.store
    # A peer that exists keeps its own version (_store_config): this one only
    # decides the format of peers created now.
    return StoreConfig(settings.chunking.params(), store.compression, store.format_version)


async def open_peers(settings: Settings, *, create: bool) -> list[Peer]:
    """Every configured destination, opened concurrently; all or none."""
    wanted = store_config(settings)
    cache_dir = settings.store.cache_dir or default_cache_dir()
    results = await asyncio.gather(
        *(open_peer(d, wanted, create=create, cache_dir=cache_dir) for d in settings.destinations),
        return_exceptions=True,
    )
    peers = [r for r in results if isinstance(r, Peer)]
    for r in results:
        if isinstance(r, BaseException):
            await close_peers(peers)
            raise r
    return peers


async def close_peers(peers: list[Peer]) -> None:
    for p in peers:
        with contextlib.suppress(Exception):  # closing is best effort, after the work
            await p.close()


@contextlib.asynccontextmanager
async def opened_peers(settings: Settings, *, create: bool) -> AsyncIterator[list[Peer]]:
    peers = await open_peers(settings, create=create)
    try:
        yield peers
    finally:
        await close_peers(peers)
