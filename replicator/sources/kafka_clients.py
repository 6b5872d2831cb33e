"""aiokafka clients built from the ``[kafka]`` settings, and the dead-letter writer.

Secrets (the SASL password, the TLS key password) are read here, when a
client is built, from the file or environment variable the settings name;
they are handed to aiokafka and kept nowhere else, so no log line, repr or
dead letter can carry them. aiokafka's defaults lose data (auto-commit on,
``auto_offset_reset=latest``): both are set explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from replicator.config import KafkaSettings
from replicator.errors import ConfigError
from replicator.events import ChangeEvent, Position

log = logging.getLogger(__name__)


class _Redact(logging.Filter):
    """Keeps the SASL password out of aiokafka's logs.

    aiokafka logs every request at DEBUG, ``SaslAuthenticateRequest`` with the
    PLAIN credentials among them (botocore's DEBUG log does the same with the
    Authorization header). Filters on a logger see only that logger's own
    records, so this one is put on every aiokafka logger."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        hit = "sasl_auth_bytes=" in msg
        if hit or any(s in msg for s in self.secrets):
            if hit:  # the field comes last in the request's repr
                msg = msg.split("sasl_auth_bytes=", 1)[0] + "sasl_auth_bytes=<redacted>)"
            for secret in self.secrets:
                msg = msg.replace(secret, "<redacted>")
            record.msg, record.args = msg, ()
        return True


_REDACT = _Redact()


def _guard_logs(secret: str | None) -> None:
    if secret:
        _REDACT.secrets.add(secret)
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "aiokafka"]
    for name in ["aiokafka", *names]:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


#: Bounds on retrying a dead-letter produce while the brokers are away: the
#: record stays uncommitted meanwhile, so nothing is lost by waiting.
DLQ_BACKOFF_S = (0.2, 5.0)


def _ssl_context(settings: KafkaSettings) -> Any:
    password = None
    if settings.ssl_key_password_env is not None:
        password = os.environ.get(settings.ssl_key_password_env)
        if password is None:
            raise ConfigError(
                f"kafka.ssl_key_password_env: environment variable "
                f"{settings.ssl_key_password_env} is not set"
            )
    ctx = create_ssl_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        password=password,
    )
    ctx.check_hostname = settings.ssl_check_hostname
    return ctx


def common_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by the consumer and the producer."""
    opts: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = _ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = password = settings.sasl_password()
        _guard_logs(password)
    return opts


def make_consumer(settings: KafkaSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **common_options(settings),
        group_id=settings.group_id,
        enable_auto_commit=False,  # offsets are committed as a watermark, by us
        auto_offset_reset=settings.auto_offset_reset,
        isolation_level="read_committed",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        max_poll_records=settings.fetch_records,
    )


async def stop_clients(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    for client in clients:
        if client is not None:
            with contextlib.suppress(KafkaError):
                await client.stop()


def make_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    # acks=all: a dead letter is acknowledged (its offset committed) only once
    # the brokers hold it.
    return AIOKafkaProducer(**common_options(settings), acks="all")


class Record(Protocol):
    """What is used of an aiokafka ConsumerRecord (aiokafka ships no type marker)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms: the producer's or the broker's time
    key: bytes | None
    value: bytes | None


def event_dead_letter(event: ChangeEvent) -> bytes:
    """The dead letter of an event the pipeline could not handle (no secrets in it)."""
    fields = {
        "bucket": event.bucket,
        "key": event.key,
        "kind": str(event.kind),
        "version_id": event.version_id,
        "etag": event.etag,
        "size": event.size,
        "sequencer": event.sequencer,
        "event_time_ns": event.event_time_ns,
    }
    return json.dumps(fields).encode()


def dead_letter_headers(where: Position, timestamp_ms: int, reason: str) -> list[tuple[str, bytes]]:
    """Why, and where the message was read (its topic, partition, offset, time)."""
    return [
        ("replicator.reason", reason.encode("utf-8", "replace")),
        ("replicator.topic", where.topic.encode("utf-8", "replace")),
        ("replicator.partition", str(where.partition).encode()),
        ("replicator.offset", str(where.offset).encode()),
        ("replicator.timestamp", str(timestamp_ms).encode()),
    ]


async def produce_until_acked(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes | None,
    *,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    closing: asyncio.Event,
) -> bool:
    """Produce one record, retrying with backoff while the brokers are away.

    False if the source closed first (the record is then not acknowledged and
    will be read again)."""
    delay = DLQ_BACKOFF_S[0]
    while not closing.is_set():
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            return True
        except KafkaError as exc:
            log.warning(
                "dead-letter produce to %s failed (%s); retrying", topic, type(exc).__name__
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, DLQ_BACKOFF_S[1])
    return False
