"""The small storage interface every peer backend implements.

Keys are '/'-separated relative names (``packs/ab/abcd…``): no empty
segment, no ``.`` or ``..`` segment, no leading '/'. Every backend refuses
other keys with ValueError, so a key that works on S3 also works on a local
directory (and can never name a path outside it). Objects are write-once in
practice; ``put_if_absent`` is the primitive that makes concurrent writers
safe. Retry, rate limiting and logging are wrappers around any backend (see
``replicator.store.retry``), never inside one.

Listing order is the byte order of the UTF-8 keys, which is what S3's
ListObjectsV2 returns; the filesystem backend walks its tree in that order.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from replicator.records import record

#: Bytes handed to a put: a pack is put straight from its bytearray.
Payload = bytes | bytearray


@record(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


@record(frozen=True, slots=True)
class Capabilities:
    """What a peer supports, found by a start-up probe.

    ``checksum_algorithms`` are the integrity headers the peer accepted on a
    correct upload (``"MD5"`` for Content-MD5, ``"SHA256"`` for
    x-amz-checksum-sha256, ...); ``verified_algorithms`` are those for which
    it *refused* a deliberately wrong value. ``verifies_checksums`` is true
    when at least one algorithm replicator sends on every put is verified.
    """

    put_if_absent: bool
    checksum_algorithms: tuple[str, ...]
    verifies_checksums: bool
    ranged_upload_part_copy: bool
    verified_algorithms: tuple[str, ...] = ()


@runtime_checkable
class Backend(Protocol):
    """One peer's storage. Every backend passes tests/integration/test_backend_contract.py."""

    name: str

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        """Store ``data`` durably under ``key`` (replacing it).

        ``sha256`` is the digest the caller expects the stored bytes to have;
        computed from ``data`` when omitted. A mismatch or an incomplete body
        raises IntegrityError (or TransientStoreError) and leaves no object."""
        ...

    async def put_if_absent(self, key: str, data: Payload, *, sha256: bytes | None = None) -> bool:
        """Like put, but only when ``key`` does not exist: True if written.

        After an ambiguous failure (connection cut after the server stored
        the body) a retry answers False although this writer stored the
        bytes; for content-addressed keys both outcomes mean "present"."""
        ...

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[start, start+length)`` of the object (all when length is None).

        The range is clamped to the object like a slice: past the end is
        ``b""``. A missing object raises NotFoundError."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None when it does not exist."""
        ...

    def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """Objects under ``prefix`` in key order, paging through the listing.

        ``start_after`` resumes a listing after that key (the retry wrapper
        uses it to continue a listing that failed part-way)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    async def probe(self) -> Capabilities:
        """Find what the peer supports (writes and removes a probe object)."""
        ...

    async def close(self) -> None: ...


#: Names a backend keeps for itself (temporary files, probe objects).
RESERVED_SEGMENT_PREFIX = ".replicator-"


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid store key, else raise ValueError."""
    if not key:
        raise ValueError("empty key")
    _check_segments(key.split("/"), key)
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a key (the last segment may be partial or empty)."""
    if prefix:
        head, _, _ = prefix.rpartition("/")
        if prefix.startswith("/"):
            raise ValueError(f"prefix must be relative: {prefix!r}")
        if head:
            _check_segments(head.split("/"), prefix)
    return prefix


def _check_segments(segments: list[str], key: str) -> None:
    for seg in segments:
        if seg in ("", ".", ".."):
            raise ValueError(f"key has an empty, '.' or '..' segment: {key!r}")
        if seg.startswith(RESERVED_SEGMENT_PREFIX):
            raise ValueError(f"key segment {seg!r} uses the reserved prefix")
        if "\x00" in seg:
            raise ValueError("key contains NUL")


def sha256_of(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()
