"""The replica store format (version 2): object names and serialised forms.

Vocabulary (see docs/store-format.md for the full specification):

- ``config``: the store's format version and pinned chunker parameters.
- *pack*: new chunks concatenated, named ``packs/<hh>/<hex>`` by the BLAKE3
  of its bytes; write-once.
- *index*: per pack, ``index/<hh>/<hex>``: where each chunk of that pack sits.
- *manifest*: per object version, ``manifests/<bucket>/<key>/<version>``:
  source identity, whole-object BLAKE3 and the ordered chunk list grouped in
  runs of consecutive bytes of one pack. A removal is a tombstone manifest.

Everything is content-addressed or named by the event identity, and every
serialisation is deterministic, so a replay writes identical bytes.

Version 2 (this writer) names manifests so that listing order is version
order (event time, then sequencer, then observation number) and records the
file mtime and inode; version 1 stores and manifests are still read. A
version 3 store keeps the same version 2 manifests, many keys' in one
*segment* object (store/segments.py, store/segment_store.py); ``StoreConfig.
version`` is the store's layout, ``Manifest.format_version`` the manifest's.
"""

from __future__ import annotations

import json
from dataclasses import field
from datetime import UTC, datetime
from typing import Any

from replicator._native import ChunkerParams, blake3_digest
from replicator.errors import IncompatibleStoreError, IntegrityError
from replicator.records import record
from replicator.store import identity_text
from replicator.store.names import (
    INDEX,
    MANIFESTS,
    PACKS,
    PIECE,
    decode_segment,
    encode_segment,
    index_key,
    manifest_key,
    manifest_prefix,
    pack_key,
    parse_manifest_key,
)
from replicator.store.versions import sequencer_field

#: Names re-exported from replicator.store.names (older imports keep working).
__all__ = [
    "INDEX",
    "MANIFESTS",
    "PACKS",
    "PIECE",
    "decode_segment",
    "encode_segment",
    "index_key",
    "manifest_key",
    "manifest_prefix",
    "pack_key",
    "parse_manifest_key",
]

FORMAT_VERSION = 2
#: Manifest format versions this code reads. Version 2 names manifests in
#: version order and splits over-long key names (PIECE).
READABLE_VERSIONS = (1, 2)
#: Store formats this code reads and writes, each in its own layout: 1 and 2
#: keep one object per manifest, 3 keeps version-2 manifests of many keys in
#: segments (store/segments.py). A store keeps the version it was created with.
STORE_VERSIONS = (1, 2, 3)
#: The pack index did not change in version 2: its bytes stay those of 1.
INDEX_VERSION = 1
CONFIG_KEY = "config"


def _dumps(obj: Any) -> bytes:
    # Sorted keys and no whitespace: identical input gives identical bytes.
    # ASCII escapes (\uXXXX) keep non-UTF-8 file names (lone surrogates) exact.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IntegrityError(f"{what} is not valid JSON: {exc}") from exc


#: What decoding well-formed JSON of the wrong shape can raise.
_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError)

# ----------------------------------------------------------------- config


@record(frozen=True, slots=True)
class StoreConfig:
    chunker: ChunkerParams
    compression: str = "none"
    version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        c = self.chunker
        return _dumps(
            {
                "format": "replicator-store",
                "version": self.version,
                "digest": "blake3",
                "compression": self.compression,
                "chunker": {
                    "algorithm": "fastcdc-2020",
                    "min_size": c.min_size,
                    "avg_size": c.avg_size,
                    "max_size": c.max_size,
                    "normalization": c.normalization,
                    "seed": c.seed,
                },
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> StoreConfig:
        """Parse ``config``; anything but a readable store config raises
        IncompatibleStoreError (the caller adds the destination's name)."""
        d = _loads(data, "store config")
        if not isinstance(d, dict):
            raise IncompatibleStoreError(f"'config' is a JSON {type(d).__name__}, not an object")
        version = d.get("version")
        if (
            d.get("format") != "replicator-store"
            or type(version) is not int  # not True, not 1.0
            or version not in STORE_VERSIONS
        ):
            raise IncompatibleStoreError(
                f"'config' says format {d.get('format')!r} version {d.get('version')!r}; this "
                f"replicator reads replicator-store versions {list(STORE_VERSIONS)}"
            )
        c = d.get("chunker")
        if not isinstance(c, dict) or c.get("algorithm") != "fastcdc-2020":
            raise IncompatibleStoreError(f"'config' has no fastcdc-2020 chunker: {c!r}")
        if d.get("digest") != "blake3" or d.get("compression", "none") not in ("none", "zstd"):
            raise IncompatibleStoreError("'config' names an unsupported digest or compression")
        try:
            fields = [c[f] for f in ("min_size", "avg_size", "max_size", "normalization", "seed")]
            params = ChunkerParams(*fields)
        except _MALFORMED as exc:
            raise IncompatibleStoreError(f"'config' has bad chunker parameters: {exc}") from exc
        return cls(chunker=params, compression=d.get("compression", "none"), version=version)

    def check_matches(self, wanted: StoreConfig, peer: str) -> None:
        """Refuse a peer written with other parameters, loudly."""
        if self.chunker != wanted.chunker:
            raise IncompatibleStoreError(
                f"destination {peer!r} was written with chunker {self.chunker!r}, "
                f"but the configuration asks for {wanted.chunker!r}; a store's chunker "
                "parameters are pinned when it is created (use a new destination path)"
            )


# ----------------------------------------------------------------- index


@record(frozen=True, slots=True)
class IndexEntry:
    """One chunk inside a pack."""

    digest: bytes
    offset: int
    length: int  # raw (uncompressed) length
    stored_length: int  # bytes in the pack (== length without compression)
    compression: str = "none"


@record(frozen=True, slots=True)
class PackIndex:
    pack: bytes
    size: int
    entries: tuple[IndexEntry, ...]

    def to_bytes(self) -> bytes:
        return _dumps(
            {
                "version": INDEX_VERSION,
                "pack": self.pack.hex(),
                "size": self.size,
                "chunks": [
                    [e.digest.hex(), e.offset, e.length, e.stored_length, e.compression]
                    for e in self.entries
                ],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PackIndex:
        d = _loads(data, "pack index")
        try:
            entries = tuple(
                IndexEntry(bytes.fromhex(h), o, n, s, c) for h, o, n, s, c in d["chunks"]
            )
            return cls(bytes.fromhex(d["pack"]), int(d["size"]), entries)
        except _MALFORMED as exc:
            raise IntegrityError(f"malformed pack index: {exc!r}") from exc


# ----------------------------------------------------------------- manifests


@record(frozen=True, slots=True)
class SourceIdentity:
    """Where a version came from; the storage system's own time, never ours.

    ``event_time_ns`` orders versions: S3's LastModified or event time, a
    file's ctime (no user tool sets it back). ``sequencer`` (S3's) and then
    ``observed`` (the order a source or a peer saw versions in) break ties.
    ``mtime_ns`` is a file's modification time, kept as metadata and set on
    restore; ``inode`` is a file's inode number (change detection)."""

    source: str
    bucket: str
    key: str
    version_id: str
    etag: str
    size: int
    event_time_ns: int
    sequencer: str = ""
    mtime_ns: int | None = None
    inode: int | None = None
    observed: int = 0

    def version_name(self, removed: bool, fmt: int = FORMAT_VERSION) -> str:
        """Sortable in version order; the hash suffix pins the rest of the identity."""
        digest = blake3_digest(identity_text.hashed(self, removed, fmt)).hex()[:24]
        if fmt == 1:
            return f"{self.event_time_ns:020d}-{digest}"
        seq = sequencer_field(self.sequencer)
        return f"{self.event_time_ns:020d}-{seq}-{self.observed:020d}-{digest}"

    def to_json(self, fmt: int = FORMAT_VERSION) -> dict[str, Any]:
        t = datetime.fromtimestamp(self.event_time_ns / 1e9, tz=UTC)
        out: dict[str, Any] = {
            "source": self.source,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
            "event_time_ns": self.event_time_ns,
            "event_time": t.isoformat().replace("+00:00", "Z"),
            "sequencer": self.sequencer,
        }
        if fmt >= 2:
            out |= {"mtime_ns": self.mtime_ns, "inode": self.inode, "observed": self.observed}
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SourceIdentity:
        mtime, inode = d.get("mtime_ns"), d.get("inode")
        return cls(
            d["source"],
            d["bucket"],
            d["key"],
            d["version_id"],
            d["etag"],
            int(d["size"]),
            int(d["event_time_ns"]),
            d.get("sequencer", ""),
            None if mtime is None else int(mtime),
            None if inode is None else int(inode),
            int(d.get("observed", 0)),
        )


@record(frozen=True, slots=True)
class ChunkRef:
    digest: bytes
    length: int
    stored_length: int
    compression: str = "none"


@record(frozen=True, slots=True)
class PackRun:
    """Consecutive chunks of an object stored back to back in one pack:
    one ranged GET of ``[offset, offset + sum(stored_length))`` fetches them."""

    pack: bytes
    offset: int
    chunks: tuple[ChunkRef, ...]

    @property
    def stored_length(self) -> int:
        return sum(c.stored_length for c in self.chunks)


@record(frozen=True, slots=True)
class Manifest:
    identity: SourceIdentity
    removed: bool
    digest: bytes  # whole-object BLAKE3 (of the empty string for tombstones)
    chunker: ChunkerParams
    runs: tuple[PackRun, ...] = field(default=())
    #: The format this manifest is written in (1 for those read from old stores).
    format_version: int = FORMAT_VERSION

    @property
    def version_name(self) -> str:
        return self.identity.version_name(self.removed, self.format_version)

    def store_key(self) -> str:
        i = self.identity
        return manifest_key(i.bucket, i.key, self.version_name)

    def chunk_count(self) -> int:
        return sum(len(r.chunks) for r in self.runs)

    def packs(self) -> set[bytes]:
        return {r.pack for r in self.runs}

    def to_bytes(self) -> bytes:
        """The JSON of ``_dumps`` (sorted keys, no spaces), with the chunk
        list written straight into the output: a 4 GiB object lists 65,536
        chunks, and a list per chunk for ``json.dumps`` cost ~12 MB more than
        the ~5 MB of bytes it turns into."""
        c = self.chunker
        # Keys sort as chunker < digest < kind < object < runs < version.
        head = '{"chunker":[%d,%d,%d,%d,%d],"digest":"%s","kind":"%s","object":%s' % (  # noqa: UP031
            c.min_size,
            c.avg_size,
            c.max_size,
            c.normalization,
            c.seed,
            self.digest.hex(),
            "removed" if self.removed else "created",
            identity_text.object_json(self.identity, self.format_version),
        )
        out = bytearray(head.encode())
        out += b',"runs":['
        for n, r in enumerate(self.runs):
            out += b',{"chunks":[' if n else b'{"chunks":['
            for k, ch in enumerate(r.chunks):
                if k:
                    out += b","
                out += _chunk_bytes(ch)
            out += b'],"offset":%d,"pack":"%s"}' % (r.offset, r.pack.hex().encode())
        out += b'],"version":%d}' % self.format_version
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        d = _loads(data, "manifest")
        try:
            runs = tuple(
                PackRun(
                    bytes.fromhex(r["pack"]),
                    int(r["offset"]),
                    tuple(_chunk_from_json(ch) for ch in r["chunks"]),
                )
                for r in d["runs"]
            )
            if d["kind"] not in ("created", "removed"):
                raise ValueError(f"unknown manifest kind {d['kind']!r}")
            if d["version"] not in READABLE_VERSIONS:
                raise ValueError(f"unknown manifest version {d['version']!r}")
            return cls(
                identity=SourceIdentity.from_json(d["object"]),
                removed=d["kind"] == "removed",
                digest=bytes.fromhex(d["digest"]),
                chunker=ChunkerParams(*d["chunker"]),
                runs=runs,
                format_version=d["version"],
            )
        except _MALFORMED as exc:
            raise IntegrityError(f"malformed manifest: {exc!r}") from exc


def _chunk_bytes(c: ChunkRef) -> bytes:
    """``_dumps(_chunk_json(c))``, without the list."""
    if c.compression == "none":
        return b'["%s",%d]' % (c.digest.hex().encode(), c.length)
    return _dumps(_chunk_json(c))


def _chunk_json(c: ChunkRef) -> list[Any]:
    # Uncompressed chunks (the default) store only digest and length.
    if c.compression == "none":
        return [c.digest.hex(), c.length]
    return [c.digest.hex(), c.length, c.stored_length, c.compression]


def _chunk_from_json(v: list[Any]) -> ChunkRef:
    if len(v) == 2:
        return ChunkRef(bytes.fromhex(v[0]), int(v[1]), int(v[1]))
    return ChunkRef(bytes.fromhex(v[0]), int(v[1]), int(v[2]), str(v[3]))
