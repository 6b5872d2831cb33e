"""Storage backends behind :class:`replicator.store.backend.Backend`.

``backend_from_config`` builds one from a config table such as::

    {"type": "fs", "root": "/srv/replica"}
    {"type": "s3", "bucket": "dr-peer", "prefix": "replica/",
     "endpoint_url": "https://s3.example", "region": "eu-west-1"}

Other keys of an ``s3`` table are the keyword arguments of S3Backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replicator.store.backend import Backend
from replicator.store.backends.fs import FsBackend
from replicator.store.backends.s3 import S3Backend, S3Credentials

__all__ = ["FsBackend", "S3Backend", "S3Credentials", "backend_from_config"]


def backend_from_config(name: str, cfg: Mapping[str, Any]) -> Backend:
    """One backend from its config table; unknown keys raise TypeError/ValueError."""
    opts = dict(cfg)
    kind = opts.pop("type", None)
    if kind == "fs":
        return FsBackend(opts.pop("root"), name, **opts)
    if kind == "s3":
        return S3Backend.from_config(name, opts)
    raise ValueError(f"backend {name!r}: type must be 'fs' or 's3', not {kind!r}")
