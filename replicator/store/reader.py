"""Reading a replica store: which versions exist, which one to restore, and
the verified bytes of its chunks.

Everything here reads through the :class:`Backend` protocol only, so the
same code serves the filesystem and S3 peers. Nothing loads a whole peer:
manifests are listed page by page and grouped per key as they stream by.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

from replicator._native import blake3_digest
from replicator.errors import IncompatibleStoreError, IntegrityError, NotFoundError
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.backends.fs import FsBackend
from replicator.store.format import (
    CONFIG_KEY,
    ChunkRef,
    Manifest,
    PackIndex,
    PackRun,
    StoreConfig,
    pack_key,
)
from replicator.store.manifest_store import ManifestStore, manifests_of, register_peer
from replicator.store.versions import VersionEntry

#: Names re-exported (VersionEntry lives in store/versions.py; older imports keep working).
__all__ = ["VersionEntry"]

log = logging.getLogger(__name__)
#: Upper bound on one ranged GET. A run longer than this (packs may be up to
#: 1 GiB) is split at chunk boundaries so memory stays bounded per read.
MAX_READ = 8 * 1024 * 1024


class ChunkError(IntegrityError):
    """A chunk (or the pack range holding it) does not match its manifest."""

    def __init__(self, message: str, pack: bytes, chunk: bytes | None = None) -> None:
        super().__init__(message)
        self.pack = pack
        self.chunk = chunk


@record(frozen=True, slots=True)
class Problem:
    """What is wrong with one stored object version (restore and verify
    report these); the pack and chunk, where known, as hex."""

    key: str
    version: str
    message: str
    pack: str = ""
    chunk: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "version": self.version,
            "message": self.message,
            "pack": self.pack,
            "chunk": self.chunk,
        }


async def read_store_config(backend: Backend) -> StoreConfig:
    """The peer's ``config``; refuses a store this reader cannot understand.

    The backend is then known to hold a store of that format: its manifests
    are read in that layout wherever it is handed (``manifests_of``)."""
    try:
        data = await backend.get(CONFIG_KEY)
    except NotFoundError as exc:
        raise IncompatibleStoreError(
            f"destination {backend.name!r}: no {location(backend, CONFIG_KEY)}: "
            "not a replicator store (wrong path, or nothing replicated there yet)"
        ) from exc
    config = parse_store_config(data, backend)
    register_peer(backend, config)
    return config


def location(backend: Backend, key: str) -> str:
    """Where ``key`` lives at a peer, for messages: a path or an s3:// URL."""
    inner = backend
    while not isinstance(inner, FsBackend) and hasattr(inner, "inner"):
        inner = inner.inner
    if isinstance(inner, FsBackend):
        return str(inner.root / key)
    # S3Backend, told by its attributes: importing it would load aiobotocore
    # into every filesystem-only run.
    bucket, prefix = getattr(inner, "bucket", None), getattr(inner, "prefix", None)
    if isinstance(bucket, str) and isinstance(prefix, str):
        return f"s3://{bucket}/{prefix}{key}"
    return key


def parse_store_config(data: bytes, backend: Backend) -> StoreConfig:
    """The peer's ``config`` bytes parsed; errors name the destination and where."""
    try:
        return StoreConfig.from_bytes(data)
    except (IncompatibleStoreError, IntegrityError) as exc:
        raise IncompatibleStoreError(
            f"destination {backend.name!r}: {location(backend, CONFIG_KEY)}: {exc}"
        ) from exc


def list_versions(
    store: Backend | ManifestStore, bucket: str, key_prefix: str = "", *, exact: bool = False
) -> AsyncIterator[tuple[str, list[VersionEntry]]]:
    """(key, versions oldest first) for every key under ``key_prefix``.

    With ``exact``, only the key equal to ``key_prefix``. All versions of
    one key arrive together (``ManifestStore.list_versions``)."""
    return manifests_of(store).list_versions(bucket, key_prefix, exact=exact)


def manifest_entries(
    store: Backend | ManifestStore, bucket: str | None = None, key_prefix: str = ""
) -> AsyncIterator[VersionEntry]:
    """Every stored manifest of ``bucket`` under ``key_prefix`` (every bucket
    when None), in listing order (``ManifestStore.entries``)."""
    return manifests_of(store).entries(bucket, key_prefix)


def choose_version(versions: list[VersionEntry], at_ns: int | None) -> VersionEntry | None:
    """The newest version with event time <= ``at_ns`` (the newest of all
    when ``at_ns`` is None); None when every version is newer."""
    chosen = None
    for v in versions:  # oldest first
        if at_ns is not None and v.event_time_ns > at_ns:
            break
        chosen = v
    return chosen


#: What parsing corrupt JSON can raise besides IntegrityError (a chunk array
#: of the wrong length, nesting too deep, a lone surrogate in a key, ...).
_PARSE_ERRORS = (
    IndexError,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    RecursionError,
)


async def read_manifest(store: Backend | ManifestStore, entry: VersionEntry) -> Manifest:
    """The manifest body, checked against the name it is stored under."""
    data = await manifests_of(store).read(entry)
    return parse_manifest(data, entry)


def parse_manifest(data: bytes, entry: VersionEntry) -> Manifest:
    """``data`` parsed, refused unless it describes ``entry``'s (bucket, key,
    version name): a manifest copied under another name is not that version."""
    try:
        manifest = Manifest.from_bytes(data)
        name = manifest.store_key()
    except _PARSE_ERRORS as exc:
        raise IntegrityError(f"malformed manifest {entry.store_key!r}: {exc!r}") from exc
    i = manifest.identity
    if entry.where is None:
        same = name == entry.store_key
    else:
        same = (i.bucket, i.key, manifest.version_name) == (
            entry.bucket,
            entry.key,
            entry.version_name,
        )
    if not same:
        raise IntegrityError(
            f"manifest {entry.store_key!r} describes {name!r} (its content does not match its name)"
        )
    return manifest


def parse_index(data: bytes) -> PackIndex:
    try:
        return PackIndex.from_bytes(data)
    except _PARSE_ERRORS as exc:
        raise IntegrityError(f"malformed pack index: {exc!r}") from exc


def split_run(run: PackRun, max_read: int = MAX_READ) -> Iterator[PackRun]:
    """The run as consecutive sub-runs of at most ``max_read`` stored bytes
    (at least one chunk each), so one read never holds a whole pack."""
    chunks: list[ChunkRef] = []
    offset = start = run.offset
    size = 0
    for c in run.chunks:
        if chunks and size + c.stored_length > max_read:
            yield PackRun(run.pack, start, tuple(chunks))
            chunks, start, size = [], offset, 0
        chunks.append(c)
        size += c.stored_length
        offset += c.stored_length
    if chunks:
        yield PackRun(run.pack, start, tuple(chunks))


async def fetch_run(backend: Backend, run: PackRun) -> bytes:
    """The raw stored bytes of a run: one ranged GET, length checked."""
    length = run.stored_length
    try:
        data = await backend.get(pack_key(run.pack), run.offset, length)
    except NotFoundError as exc:
        raise ChunkError(f"pack {run.pack.hex()} is missing", run.pack) from exc
    if len(data) != length:
        raise ChunkError(
            f"pack {run.pack.hex()} is too short: {len(data)} of {length} bytes at "
            f"offset {run.offset}",
            run.pack,
            run.chunks[0].digest if run.chunks else None,
        )
    return data


def decode_chunks(run: PackRun, data: bytes) -> Iterator[tuple[ChunkRef, bytes | ChunkError]]:
    """Each chunk of ``data`` (a fetched run), decompressed and re-hashed:
    its bytes, or the ChunkError saying why it does not match."""
    view = memoryview(data)
    pos = 0
    for c in run.chunks:
        stored = view[pos : pos + c.stored_length]
        pos += c.stored_length
        yield c, _decode_chunk(run.pack, c, stored)


def verified_chunks(run: PackRun, data: bytes) -> Iterator[bytes]:
    """Like decode_chunks, raising the first mismatch."""
    for _chunk, result in decode_chunks(run, data):
        if isinstance(result, ChunkError):
            raise result
        yield result


def _decode_chunk(pack: bytes, c: ChunkRef, stored: memoryview) -> bytes | ChunkError:
    where = f"chunk {c.digest.hex()} in pack {pack.hex()}"
    if c.compression == "none":
        raw = bytes(stored)
    elif c.compression == "zstd":
        try:
            raw = _zstd_decompress(stored, c.length)
        except IntegrityError as exc:
            return ChunkError(f"{where}: {exc}", pack, c.digest)
    else:
        return ChunkError(f"{where}: unknown compression {c.compression!r}", pack, c.digest)
    if len(raw) != c.length:
        return ChunkError(f"{where}: length {len(raw)}, expected {c.length}", pack, c.digest)
    if blake3_digest(raw) != c.digest:
        return ChunkError(f"{where}: BLAKE3 mismatch (bit rot or tampering)", pack, c.digest)
    return raw


def _zstd_decompress(stored: memoryview, length: int) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError as exc:
        # Optional dependency: only stores written with compression need it.
        raise IncompatibleStoreError(
            "this store holds zstd-compressed chunks; install the 'zstandard' package to read them"
        ) from exc
    try:
        out: bytes = zstandard.ZstdDecompressor().decompress(stored, max_output_size=length)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"zstd data is corrupt: {exc}") from exc
    return out
