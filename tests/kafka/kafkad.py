"""`replicator run` on an S3 bucket followed through Kafka: config, announcing, reading back.

The daemon runs as a real child process (tests/daemon/harness.Daemon) with
a moto-server source bucket, a real Kafka broker and two directory peers.
Objects are really written to the bucket and then announced in the format
a storage system would send (AWS, MinIO or Ceph); what each peer holds is
read back with the store's reader and with `replicator restore`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from replicator._native import blake3_digest
from replicator.store.backends import FsBackend
from tests.daemon.harness import GUARD_S, Daemon, peers_and_service
from tests.integration.test_backfill import check_structure, manifests_at
from tests.kafka.corpus import aws_message, aws_record, ceph_message, minio_message
from tests.kafka.kafkautil import Topics, committed_offsets
from tests.services.moto_server import MotoServer

PEERS = ("a", "b")


def write_config(
    tmp: Path,
    topics: Topics,
    moto: MotoServer,
    bucket: str,
    *,
    extra: str = "",
    kafka: str = "",
    peers: Path | None = None,
) -> Path:
    """One daemon's config in ``tmp``; its peers under ``peers`` (default ``tmp``)."""
    peers = peers or tmp
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "replicator.toml"
    cfg.write_text(
        f"""
[source]
type = "s3"
bucket = "{bucket}"

[origin]
endpoint_url = "{moto.url}"
region = "us-east-1"
addressing_style = "path"

[kafka]
bootstrap_servers = ["{topics.broker.bootstrap}"]
topics = ["{topics.events}"]
group_id = "{topics.group}"
dead_letter_topic = "{topics.dead_letters}"
commit_interval_ms = 100
session_timeout_ms = 3000
heartbeat_interval_ms = 500
{kafka}
"""
        + peers_and_service(tmp, peers, b_target=3, extra=extra)
    )
    return cfg


def s3_env(moto: MotoServer) -> dict[str, str]:
    """The standard AWS chain, as an operator's environment gives it."""
    return {
        "AWS_ACCESS_KEY_ID": moto.endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@dataclass(frozen=True)
class Put:
    """One object version written to the bucket and announced."""

    key: str
    data: bytes
    version_id: str
    etag: str
    event_time_ns: int
    offset: int = -1
    partition: int = 0
    removed: bool = False


def _iso(ns: int) -> str:
    t = datetime.fromtimestamp(ns / 1e9, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass
class Announcer:
    """Writes objects to the source bucket and announces each through Kafka."""

    client: Any
    bucket: str
    topics: Topics
    puts: list[Put] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _producer: AIOKafkaProducer | None = None
    _last: int = 0

    async def __aenter__(self) -> Announcer:
        bootstrap = self.topics.broker.bootstrap
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._producer is not None
        await self._producer.stop()

    def _now(self) -> int:
        # Milliseconds, as notifications carry them; one apart, so versions order.
        now = time.time_ns() // 1_000_000 * 1_000_000
        self._last = max(now, self._last + 1_000_000)
        return self._last

    def write(self, key: str, data: bytes) -> Put:
        resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        vid = str(resp.get("VersionId") or "")
        return Put(key, data, vid, resp["ETag"].strip('"'), self._now())

    async def remove(self, key: str) -> Put:
        """Delete (a delete marker on a versioned bucket) and announce it."""
        resp = self.client.delete_object(Bucket=self.bucket, Key=key)
        put = Put(key, b"", str(resp.get("VersionId") or ""), "", self._now(), removed=True)
        rec = aws_record(
            self.bucket, key, name="ObjectRemoved:DeleteMarkerCreated", size=None,
            version=put.version_id, sequencer=f"{next(self._seq):016X}",
            time=_iso(put.event_time_ns),
        )  # fmt: skip
        return await self.send(put, aws_message(rec))

    def message(self, put: Put, fmt: str, *, sequencer: str | None = None) -> bytes:
        seq = sequencer or f"{next(self._seq):016X}"
        when, size, etag = _iso(put.event_time_ns), len(put.data), put.etag
        if fmt == "aws":
            rec = aws_record(
                self.bucket, put.key, size=size, etag=etag, version=put.version_id,
                sequencer=seq, time=when,
            )  # fmt: skip
            return aws_message(rec)
        if fmt == "minio":
            return minio_message(
                self.bucket, put.key, size=size, etag=etag, version=put.version_id,
                sequencer=seq, time=when,
            )  # fmt: skip
        # Ceph: raw key, size as text, no version id (the read is pinned by ETag).
        return ceph_message(self.bucket, put.key, size=str(size), etag=etag, sequencer=seq,
                            time=when)  # fmt: skip

    async def send(self, put: Put, value: bytes, *, key: bytes | None = None) -> Put:
        assert self._producer is not None
        for attempt in range(40):
            try:
                meta = await self._producer.send_and_wait(
                    self.topics.events, value, key=key if key is not None else put.key.encode()
                )
                break
            except KafkaError:  # a broker just restarted: leaders not elected yet
                if attempt == 39:
                    raise
                await asyncio.sleep(0.5)
        sent = Put(**{**put.__dict__, "offset": meta.offset, "partition": meta.partition})
        self.puts.append(sent)
        return sent

    async def announce(self, key: str, data: bytes, fmt: str = "aws") -> Put:
        put = self.write(key, data)
        return await self.send(put, self.message(put, fmt))


async def log_ends(topics: Topics) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.broker.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topics.events])
    finally:
        await admin.close()
    parts = [p["partition"] for p in described["partitions"]]
    assert parts, f"topic {topics.events} has no partitions"
    consumer = AIOKafkaConsumer(bootstrap_servers=topics.broker.bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topics.events, p) for p in parts])
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): end for tp, end in ends.items()}


async def wait_assigned(daemon: Daemon) -> None:
    """Until the daemon logged its first partition assignment."""
    while "kafka source: assigned" not in daemon.log_path.read_text(errors="replace"):
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited:\n{daemon.log_tail()}")
        await asyncio.sleep(0.01)


async def wait_committed_to_end(topics: Topics, daemon: Daemon | None = None) -> float:
    """Until the group's committed offsets (admin API) reach every log end."""
    started = time.monotonic()
    while time.monotonic() - started < GUARD_S:
        ends = await log_ends(topics)
        committed = await committed_offsets(topics.broker, topics.group)
        if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    tail = daemon.log_tail(8) if daemon is not None else ""
    raise AssertionError(f"committed {committed} never reached the log end {ends}\n{tail}")


async def peer_state(peer: Path) -> dict[str, bytes]:
    """Newest live bytes per key; asserts no manifest names a missing chunk."""
    return await check_structure(FsBackend(peer, peer.name))


async def held_versions(peer: Path) -> dict[tuple[str, str, int], bytes]:
    """(key, version id, event time) -> whole-object digest of each live manifest."""
    out: dict[tuple[str, str, int], bytes] = {}
    if not any((peer / layout).exists() for layout in ("manifests", "segments")):
        return out
    for key, manifests in (await manifests_at(FsBackend(peer, peer.name))).items():
        for m in manifests:
            if not m.removed:
                out[(key, m.identity.version_id, m.identity.event_time_ns)] = m.digest
    return out


async def missing_at(peer: Path, puts: list[Put]) -> list[Put]:
    """The announced versions a peer has no manifest of, with these exact bytes."""
    held = await held_versions(peer)
    return [
        p
        for p in puts
        if not p.removed
        and held.get((p.key, p.version_id, p.event_time_ns)) != blake3_digest(p.data)
    ]


def differences(got: dict[str, bytes], want: dict[str, bytes]) -> dict[str, list[str]]:
    """Keys missing, unexpected, or with other bytes (empty lists: equal)."""
    return {
        "missing": sorted(set(want) - set(got)),
        "unexpected": sorted(set(got) - set(want)),
        "different": sorted(k for k in set(got) & set(want) if got[k] != want[k]),
    }


NO_DIFFERENCES: dict[str, list[str]] = {"missing": [], "unexpected": [], "different": []}


def assigned(daemon: Daemon) -> set[int]:
    """Partitions a daemon consumes now (its replicator_kafka_consumer_lag series)."""
    code, body = daemon.get("/metrics")
    assert code == 200
    out = set()
    for line in body.decode().splitlines():
        if line.startswith("replicator_kafka_consumer_lag{"):
            out.add(int(line.split('partition="')[1].split('"')[0]))
    return out
