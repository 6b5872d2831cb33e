"""The source the daemon runs, chosen by the configuration.

``make_source`` returns a :class:`Feed`: the Source, how the pipeline opens
one event's bytes, and how the daemon reconciles against a listing when the
source reports a gap. Two kinds:

- a directory (``[source] type = "fs"``): the watcher; the tree is
  reconciled at start-up and after every watcher gap (overflow, watch limit);
- an S3 bucket followed through Kafka (``type = "s3"`` plus a ``[kafka]``
  table): the consumer group; each event's exact version is read from the
  bucket (VersionId when the event has one, else pinned by ETag: a version
  gone or overwritten is superseded). Kafka holds what happened while the
  daemon was down, so there is no start-up reconcile; a *gap* (retention
  or offset expiry lost events) makes the consumer wait until a listing
  reconcile of the bucket (the backfill, with its deletion guard) is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from replicator.config import FsSourceSettings, KafkaSettings, S3SourceSettings, Settings
from replicator.errors import ConfigError, SupersededError
from replicator.events import ChangeEvent
from replicator.metrics import SourceLink, Telemetry
from replicator.origins import ObjectReader, Origin
from replicator.origins.fs import FsOrigin
from replicator.origins.s3 import S3Origin
from replicator.sources import Source
from replicator.sources.fswatch import DirectorySource
from replicator.sources.kafka import Gap, KafkaSource
from replicator.sources.kafka_clients import common_options

log = structlog.get_logger("replicator.sources")

#: Opens the bytes of exactly one event's version (SupersededError if gone).
Opener = Callable[[ChangeEvent], Awaitable[ObjectReader]]


@dataclass
class Feed:
    """A source as the daemon runs it."""

    source: Source
    opener: Opener
    window_size: int
    etag_is_digest: bool
    #: Builds the origin a listing reconcile reads (closed by the caller).
    origin: Callable[[], Origin]
    describe: str
    #: Reconcile the source against every peer before the service starts.
    reconcile_at_start: bool
    #: Set by the source when a listing reconcile is needed.
    gaps: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by the daemon after each successful reconcile.
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        await self.source.close()
        for close in self.closers:
            await close()


def make_source(settings: Settings, telemetry: Telemetry) -> Feed:
    src = settings.source
    if isinstance(src, FsSourceSettings):
        watcher = DirectorySource(src)
        return Feed(
            watcher,
            watcher.open,
            FsOrigin.window_size,
            etag_is_digest=True,
            origin=lambda: FsOrigin(watcher.root, watcher.bucket),
            describe=str(watcher.root),
            reconcile_at_start=True,
            gaps=watcher.gaps,
        )
    if settings.kafka is None:
        raise ConfigError(
            "source.type: an s3 source is followed through its change events: add a [kafka] table"
        )
    return _kafka_feed(settings, src, telemetry)


def _kafka_feed(settings: Settings, src: S3SourceSettings, telemetry: Telemetry) -> Feed:
    assert settings.kafka is not None and settings.origin is not None  # checked by the caller
    kafka = settings.kafka
    # The consumer must pause before the pipeline stops taking events: a
    # pipeline that stops iterating stops the consumer polling, and a member
    # that does not poll for max_poll_interval_ms is thrown out of its group.
    bound = min(kafka.max_in_flight, max(1, settings.service.max_pending - 1))
    if bound != kafka.max_in_flight:
        kafka = kafka.model_copy(update={"max_in_flight": bound})
    origin_cfg = settings.origin
    reads = S3Origin(src.bucket, src.prefix, origin_cfg)
    feed: Feed

    async def on_gap(gap: Gap) -> None:
        telemetry.kafka_gap(gap.topic, gap.partition)
        feed.settled.clear()
        feed.gaps.set()
        await feed.settled.wait()  # the listing reconcile, before going on

    consumer = KafkaSource(
        kafka,
        source_id=S3Origin.source_id,
        bucket=src.bucket,  # a topic may carry other buckets' events: skipped, counted
        prefix=src.prefix,
        on_gap=on_gap,
        on_outcome=lambda outcome: telemetry.outcome(KafkaSource.name, str(outcome)),
    )
    watch_kafka(telemetry, consumer)
    feed = Feed(
        consumer,
        lambda event: open_exact(reads, event),
        reads.window_size,
        etag_is_digest=False,
        origin=lambda: S3Origin(src.bucket, src.prefix, origin_cfg),
        describe=f"s3://{src.bucket}/{src.prefix} via kafka {','.join(kafka.topics)}",
        reconcile_at_start=False,
        closers=[reads.close],
    )
    return feed


def watch_kafka(telemetry: Telemetry, consumer: KafkaSource) -> None:
    """Lag, connection and reconnects of the consumer, read at every scrape and ``/readyz``."""
    telemetry.set_consumer_lag(consumer.lag)
    telemetry.set_source_link(SourceLink(consumer.connection_problem, lambda: consumer.reconnects))


async def open_exact(origin: S3Origin, event: ChangeEvent) -> ObjectReader:
    """The event's own version: by VersionId, else by ETag (IfMatch).

    Notifications carry the ETag bare; S3 answers it quoted, and the reader
    compares the two, so it is quoted here."""
    etag = event.etag
    if etag and not etag.startswith(('"', 'W/"')):
        etag = f'"{etag}"'
    if not event.version_id and not etag:
        raise SupersededError(f"{event.key!r}: the event names no version and no ETag")
    return await origin.open(replace(event.object_version(), etag=etag))


async def check_kafka(settings: Settings) -> None:
    """``check-config``: the brokers answer, the topics exist, the bucket answers.

    A consumer outside any group asks: joining the daemons' group would make
    the brokers rebalance the running daemons' partitions."""
    if settings.kafka is None or not isinstance(settings.source, S3SourceSettings):
        return
    kafka: KafkaSettings = settings.kafka
    consumer = AIOKafkaConsumer(**common_options(kafka), request_timeout_ms=10_000)
    try:
        await consumer.start()
        topics = await consumer.topics()
    except KafkaError as exc:
        servers = ",".join(kafka.bootstrap_servers)
        raise ConfigError(f"kafka.bootstrap_servers: cannot reach {servers}: {exc}") from None
    finally:
        await consumer.stop()
    missing = [t for t in (*kafka.topics, kafka.dead_letter_topic) if t not in topics]
    if missing:
        raise ConfigError(f"kafka.topics: {', '.join(missing)} do not exist on the brokers")
    assert settings.origin is not None  # an s3 source needs one (Settings checks it)
    origin = S3Origin(settings.source.bucket, settings.source.prefix, settings.origin)
    try:
        await origin.check()
    finally:
        await origin.close()
