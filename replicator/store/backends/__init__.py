"""Storage backends behind :class:`replicator.store.backend.Backend`.

Peers are built from the validated configuration by
``replicator.store.peer.make_backend``; credentials come from the standard
AWS chain, never from a config table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from replicator.store.backends.fs import FsBackend

if TYPE_CHECKING:
    from replicator.s3client import S3Credentials
    from replicator.store.backends.s3 import S3Backend


def __getattr__(name: str) -> Any:
    """The S3 backend is loaded on first use: aiobotocore is slow to import."""
    if name in ("S3Backend", "S3Credentials"):
        from replicator.store.backends import s3  # noqa: PLC0415

        return getattr(s3, name)
    raise AttributeError(name)


__all__ = ["FsBackend", "S3Backend", "S3Credentials"]
