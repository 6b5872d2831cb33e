"""The 1 MiB block chaining values of large objects' whole digests, by digest.

An object read in more than one window is hashed twice: once chunk by
chunk (the chunk digests) and once whole (its BLAKE3, in the manifest). The
whole digest is kept as one chaining value (CV) per 1 MiB block
(native/src/tree.rs), and this cache keeps them, one small file per digest
(32 bytes per MiB), beside the index caches in ``store.cache_dir``. The next
version of the object then takes the CV of every block whose chunks are
the previous version's, at the same offsets, instead of hashing its bytes
a second time (the AI-like update: docs/performance.md, "Block subtrees").

Only a hint, like the index cache: the native chunker takes the CVs
only if they merge into the previous version's digest (so a torn, stale or
foreign file is ignored), and a missing one costs the second hash, never a
copy. Files are written without a sync for the same reason. The entry of
the version an update replaced is removed once the new one is written;
one left by a version that was never updated stays, 0.003 % of its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from replicator.store.index_cache import default_cache_dir


class SubtreeCache:
    """Block CVs by whole-object digest, as files under ``root``."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.root = (cache_dir or default_cache_dir()) / "subtrees"

    def _path(self, digest: bytes) -> Path:
        return self.root / digest.hex()

    async def get(self, digest: bytes) -> bytes | None:
        """The CVs kept for ``digest``, or None (absent or unreadable)."""
        return await asyncio.to_thread(self._get, digest)

    def _get(self, digest: bytes) -> bytes | None:
        try:
            return self._path(digest).read_bytes()
        except OSError:
            return None

    async def put(self, digest: bytes, cvs: bytes, replaces: bytes | None = None) -> None:
        """Keep ``cvs`` for ``digest``; drop the entry of ``replaces``. A
        cache that cannot be written is left alone (the next update hashes)."""
        await asyncio.to_thread(self._put, digest, cvs, replaces)

    def _put(self, digest: bytes, cvs: bytes, replaces: bytes | None) -> None:
        path = self._path(digest)
        # One writer's own name: two puts of one digest may run at once.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(cvs)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        if replaces is not None and replaces != digest:
            with contextlib.suppress(OSError):
                self._path(replaces).unlink()
