"""The heartbeat canary: a small object written into the source on a period,
whose age at each peer measures the whole path end to end (storage event →
notification → daemon → peer), the way pt-heartbeat measures MySQL lag.

Vocabulary: a *beat* is one write of the heartbeat object (``_replicator/
heartbeat`` under the source by default, ``service.heartbeat_key``). Its
*age at a peer* is now minus the event time of the newest heartbeat version
durable there. ``replicator heartbeat`` reads it from the manifest names
alone (they start with the event time), one small listing per peer. The
daemon (``service.heartbeat_interval_seconds`` > 0) beats with ``beating``
and learns of each durable beat from the pipeline itself
(:mod:`replicator.metrics_heartbeat`), after one listing per peer at start.
Unlike the RPO, the age keeps growing when change notifications stop
arriving, when nothing looks pending.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from botocore.exceptions import ClientError

from replicator import config
from replicator.errors import StoreError
from replicator.metrics_heartbeat import HeartbeatAges
from replicator.origins.s3 import S3Origin
from replicator.store.backend import Backend
from replicator.store.peer import Peer
from replicator.store.reader import list_versions

log = structlog.get_logger("replicator.heartbeat")

DEFAULT_KEY = config.HEARTBEAT_KEY
#: S3 error codes that mean "this credential may not write here": retrying
#: every period would only repeat them.
DENIED_CODES = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)
#: OS errors that mean the same for a directory source.
DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class BeatDenied(StoreError):
    """The source refuses the beat (read-only credential or mount)."""


@dataclass(frozen=True, slots=True)
class PeerAge:
    destination: str
    #: Seconds since the newest durable beat's event time; None before the first.
    age_seconds: float | None


def beat_body(now: float) -> bytes:
    """What a beat holds: when and where it was written (never a secret)."""
    return json.dumps({"written_at": now, "host": socket.gethostname()}).encode() + b"\n"


async def beat(settings: config.Settings, key: str = DEFAULT_KEY) -> int:
    """Write the heartbeat object into the source: a new version every time.
    When it was written (ns); BeatDenied when the source refuses it."""
    written_ns = time.time_ns()
    body = beat_body(written_ns / 1e9)
    source = settings.source
    if isinstance(source, config.FsSourceSettings):
        path = source.path / key
        try:
            await asyncio.to_thread(_replace, path, body)
        except OSError as exc:
            kind = BeatDenied if exc.errno in DENIED_ERRNOS else StoreError
            raise kind(f"heartbeat: writing {path} failed: {exc.strerror or exc}") from exc
        return written_ns
    assert settings.origin is not None  # Settings refuses an s3 source without one
    origin = S3Origin(source.bucket, source.prefix, settings.origin)
    where = f"s3://{source.bucket}/{source.prefix}{key}"
    try:
        client = await origin.client()
        await client.put_object(Bucket=source.bucket, Key=source.prefix + key, Body=body)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        kind = BeatDenied if code in DENIED_CODES else StoreError
        raise kind(f"heartbeat: writing {where} failed: {code or exc}") from exc
    except Exception as exc:  # endpoint errors have no common base worth naming
        raise StoreError(f"heartbeat: writing {where} failed: {exc}") from exc
    finally:
        await origin.close()
    return written_ns


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


async def newest_at(backend: Backend, bucket: str, key: str) -> int | None:
    """Event time (ns) of the newest beat durable at ``backend``; None if none."""
    newest = None
    async for _key, versions in list_versions(backend, bucket, key, exact=True):
        newest = max(v.event_time_ns for v in versions)
    return newest


async def age_at(backend: Backend, bucket: str, key: str, now_ns: int) -> float | None:
    """Seconds since the newest beat durable at ``backend``; None if none."""
    newest = await newest_at(backend, bucket, key)
    return None if newest is None else max(0.0, (now_ns - newest) / 1e9)


async def beating(settings: config.Settings, ages: HeartbeatAges, peers: Sequence[Peer]) -> None:
    """The daemon's heartbeat: a beat every period until cancelled.

    After the first beat, each peer's newest canary is listed once (a daemon
    restarted next to an old canary reports its true age); from then on the
    pipeline reports each beat that becomes durable (``Telemetry.durable``).
    A source that refuses the write disables the heartbeat, with one error
    line saying why; other failures are retried next period."""
    service = settings.service
    key = heartbeat_key(settings, service.heartbeat_key)
    ages.enable(key, service.heartbeat_interval_seconds)
    listed = False
    while True:
        denied = await _beat_once(settings, ages)
        if not listed:
            # Also when denied: an old canary's growing age then pages.
            await _newest_at_peers(settings.source.bucket, key, ages, peers)
            listed = True
        if denied:
            return
        await asyncio.sleep(service.heartbeat_interval_seconds)


async def _beat_once(settings: config.Settings, ages: HeartbeatAges) -> bool:
    """One beat; True when the source refuses it (the heartbeat is then off)."""
    try:
        ages.beaten(await beat(settings, settings.service.heartbeat_key))
    except BeatDenied as exc:
        ages.disable()
        log.error(
            "heartbeat disabled: the source refuses the canary write; grant write access "
            "to that key or set service.heartbeat_interval_seconds = 0",
            error=str(exc),
        )
        return True
    except StoreError as exc:
        log.warning("heartbeat not written, trying again next period", error=str(exc))
    return False


async def _newest_at_peers(
    bucket: str, key: str, ages: HeartbeatAges, peers: Sequence[Peer]
) -> None:
    for peer in peers:
        try:
            newest = await newest_at(peer.backend, bucket, key)
        except (StoreError, OSError) as exc:
            log.warning(
                "heartbeat: cannot list the peer's canary", destination=peer.name, error=str(exc)
            )
            continue
        if newest is not None:
            ages.seen(peer.name, newest)


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


__all__ = [
    "DEFAULT_KEY",
    "BeatDenied",
    "PeerAge",
    "age_at",
    "beat",
    "beating",
    "heartbeat_key",
    "newest_at",
    "textfile",
]
