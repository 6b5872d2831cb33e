"""Fixtures of the Kafka tier: one real broker per session, fresh topics per test.

The broker (Apache Kafka 4.x, KRaft, one node; tests/services/kafka) starts
once per session (about 10-25 s on the shared machine) and is stopped by PID
at the end. It also listens with SASL/PLAIN for a user whose password is a
canary, so tests can show it never leaks. moto server provides the source
bucket whose objects the produced notifications announce.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.kafka.kafkautil import Topics, create_topic
from tests.services.kafka.server import KafkaBroker, kafka_version
from tests.services.moto_server import MotoServer
from tests.services.process import ServiceError
from tests.services.s3client import empty_and_delete_bucket

SASL_USER = "replicator"


def _unavailable(reason: str) -> None:
    if os.environ.get("REPLICATOR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required test service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sasl_canary() -> str:
    return "CANARY-sasl-" + secrets.token_hex(12)


@pytest.fixture(scope="session")
def kafka_broker(
    tmp_path_factory: pytest.TempPathFactory, sasl_canary: str
) -> Iterator[KafkaBroker]:
    try:
        broker = KafkaBroker(
            tmp_path_factory.mktemp("kafka"),
            sasl_users={SASL_USER: sasl_canary},
            # Short sessions so a killed group member is noticed in seconds.
            **{"group.min.session.timeout.ms": "1000"},
        )
    except ServiceError as exc:
        _unavailable(str(exc))
    print(
        f"\nKafka {kafka_version()}: storage format {broker.format_seconds:.1f} s, "
        f"broker ready {broker.start_seconds:.1f} s"
    )
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def moto_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    try:
        server = MotoServer(tmp_path_factory.mktemp("moto-kafka"))
    except ServiceError as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture
def source_bucket(moto_source: MotoServer) -> Iterator[tuple[Any, str]]:
    """(botocore client, bucket) of a fresh bucket at moto, removed afterwards."""
    client = moto_source.endpoint.client()
    bucket = f"src-{secrets.token_hex(5)}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    empty_and_delete_bucket(client, bucket)


@pytest.fixture
def versioned(source_bucket: tuple[Any, str]) -> Iterator[tuple[Any, str]]:
    """A versioned source bucket, as a bucket protected for disaster recovery is."""
    client, bucket = source_bucket
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    yield client, bucket
    # Every version and delete marker, so the bucket can be deleted.
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])


@pytest.fixture
def partitions() -> int:
    return 1


@pytest.fixture
async def topics(kafka_broker: KafkaBroker, partitions: int) -> AsyncIterator[Topics]:
    tag = secrets.token_hex(4)
    t = Topics(kafka_broker, f"s3-events-{tag}", f"s3-dead-{tag}", f"replicator-{tag}")
    await create_topic(kafka_broker, t.events, partitions)
    await create_topic(kafka_broker, t.dead_letters, 1)
    yield t
