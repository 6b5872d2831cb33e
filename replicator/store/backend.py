"""The small storage interface every peer backend implements.

Keys are '/'-separated relative names (``packs/ab/abcd…``). Objects are
write-once in practice; ``put_if_absent`` is the primitive that makes
concurrent writers safe. Retry, rate limiting and logging are wrappers
around any backend (see ``replicator.store.retry``), never inside one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a peer supports, found by a start-up probe."""

    put_if_absent: bool
    checksum_algorithms: tuple[str, ...]
    verifies_checksums: bool
    ranged_upload_part_copy: bool


@runtime_checkable
class Backend(Protocol):
    """One peer's storage. Every backend passes tests/integration/test_backend_contract.py."""

    name: str

    async def put(self, key: str, data: bytes, *, sha256: bytes | None = None) -> None:
        """Store ``data`` durably under ``key`` (replacing it).

        ``sha256`` is the digest the caller expects the stored bytes to have;
        computed from ``data`` when omitted. A mismatch or an incomplete body
        raises IntegrityError (or TransientStoreError) and leaves no object."""
        ...

    async def put_if_absent(self, key: str, data: bytes, *, sha256: bytes | None = None) -> bool:
        """Like put, but only when ``key`` does not exist: True if written."""
        ...

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[start, start+length)`` of the object (all when length is None)."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None when it does not exist."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Objects under ``prefix`` in key order, paging through the listing."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    async def probe(self) -> Capabilities:
        """Find what the peer supports (writes and removes a probe object)."""
        ...

    async def close(self) -> None: ...
