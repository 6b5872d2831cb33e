"""The heartbeat canary: a small object written into the source on a period,
whose age at each peer measures the whole path end to end (storage event →
notification → daemon → peer), the way pt-heartbeat measures MySQL lag.

Vocabulary: a *beat* is one write of the heartbeat object (``_replicator/
heartbeat`` under the source by default). Its *age at a peer* is now minus
the event time of the newest heartbeat version durable there, read from the
manifest names alone (they start with the event time), so measuring costs
one small listing per peer. Unlike the RPO, the age keeps growing when
change notifications stop arriving, when nothing looks pending.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from replicator import config
from replicator.errors import StoreError
from replicator.origins.s3 import S3Origin
from replicator.store.backend import Backend
from replicator.store.reader import list_versions

#: Not under a dot directory: the directory watcher ignores names starting
#: with a dot (its temporary-file patterns), and the beat must be replicated.
DEFAULT_KEY = "_replicator/heartbeat"


@dataclass(frozen=True, slots=True)
class PeerAge:
    destination: str
    #: Seconds since the newest durable beat's event time; None before the first.
    age_seconds: float | None


def beat_body(now: float) -> bytes:
    """What a beat holds: when and where it was written (never a secret)."""
    return json.dumps({"written_at": now, "host": socket.gethostname()}).encode() + b"\n"


async def beat(settings: config.Settings, key: str = DEFAULT_KEY) -> None:
    """Write the heartbeat object into the source: a new version every time."""
    body = beat_body(time.time())
    source = settings.source
    if isinstance(source, config.FsSourceSettings):
        await asyncio.to_thread(_replace, source.path / key, body)
        return
    assert settings.origin is not None  # Settings refuses an s3 source without one
    origin = S3Origin(source.bucket, source.prefix, settings.origin)
    try:
        client = await origin.client()
        await client.put_object(Bucket=source.bucket, Key=source.prefix + key, Body=body)
    except Exception as exc:  # botocore's errors have no common base worth naming
        raise StoreError(f"heartbeat: writing s3://{source.bucket}/{key} failed: {exc}") from exc
    finally:
        await origin.close()


def _replace(path: Path, body: bytes) -> None:
    # A rename gives the beat a new inode and ctime: a new version, never an
    # in-place rewrite a reader could catch half-written. The temporary name
    # starts with a dot, which the directory watcher ignores.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".heartbeat-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def heartbeat_key(settings: config.Settings, key: str = DEFAULT_KEY) -> str:
    """The key the beat has in manifests (an s3 source's prefix included)."""
    source = settings.source
    return source.prefix + key if isinstance(source, config.S3SourceSettings) else key


async def age_at(backend: Backend, bucket: str, key: str, now_ns: int) -> float | None:
    """Seconds since the newest beat durable at ``backend``; None if none."""
    newest = None
    async for _key, versions in list_versions(backend, bucket, key, exact=True):
        newest = max(v.event_time_ns for v in versions)
    return None if newest is None else max(0.0, (now_ns - newest) / 1e9)


def textfile(ages: list[PeerAge]) -> str:
    """``replicator_heartbeat_age_seconds{destination}`` in the text format;
    a peer without any beat yet has no sample (absent, not zero)."""
    lines = [
        "# HELP replicator_heartbeat_age_seconds Age of the newest heartbeat durable at the peer.",
        "# TYPE replicator_heartbeat_age_seconds gauge",
    ]
    for a in ages:
        if a.age_seconds is not None:
            name = a.destination.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.append(
                f'replicator_heartbeat_age_seconds{{destination="{name}"}} {a.age_seconds!r}'
            )
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_KEY", "PeerAge", "age_at", "beat", "heartbeat_key", "textfile"]
