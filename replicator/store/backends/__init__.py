"""Storage backends behind :class:`replicator.store.backend.Backend`.

Peers are built from the validated configuration by
``replicator.store.peer.make_backend``; credentials come from the standard
AWS chain, never from a config table.
"""

from __future__ import annotations

from replicator.store.backends.fs import FsBackend
from replicator.store.backends.s3 import S3Backend, S3Credentials

__all__ = ["FsBackend", "S3Backend", "S3Credentials"]
