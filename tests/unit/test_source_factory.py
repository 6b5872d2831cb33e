"""The daemon's source factory: which source a configuration runs, and how."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator.config import Settings
from replicator.errors import ConfigError
from replicator.metrics import Telemetry
from replicator.sources.factory import make_source
from replicator.sources.fswatch import DirectorySource
from replicator.sources.kafka import KafkaSource


def settings(tmp_path: Path, **extra: Any) -> Settings:
    raw: dict[str, Any] = {
        "source": {"type": "s3", "bucket": "data", "prefix": "ckpt/"},
        "origin": {"endpoint_url": "http://127.0.0.1:9"},
        "destinations": [{"name": "a", "type": "fs", "path": str(tmp_path / "a")}],
    }
    return Settings.model_validate(raw | extra)


KAFKA = {
    "bootstrap_servers": ["127.0.0.1:9"],
    "topics": ["s3-events"],
    "group_id": "g",
    "dead_letter_topic": "dead",
}


def telemetry() -> Telemetry:
    return Telemetry(["a"], {"a": 60.0})


def test_a_directory_runs_the_watcher_and_reconciles_at_start(tmp_path: Path) -> None:
    s = settings(tmp_path, source={"type": "fs", "path": str(tmp_path / "src")})
    feed = make_source(s, telemetry())
    assert isinstance(feed.source, DirectorySource)
    assert feed.reconcile_at_start and feed.etag_is_digest


def test_a_bucket_runs_the_kafka_consumer_without_a_start_up_reconcile(tmp_path: Path) -> None:
    s = settings(tmp_path, kafka=KAFKA)
    feed = make_source(s, telemetry())
    assert isinstance(feed.source, KafkaSource)
    assert (feed.source.bucket, feed.source.prefix) == ("data", "ckpt/")
    assert not feed.reconcile_at_start and not feed.etag_is_digest
    assert feed.describe == "s3://data/ckpt/ via kafka s3-events"


def test_the_consumer_pauses_before_the_pipeline_stops_taking(tmp_path: Path) -> None:
    s = settings(tmp_path, kafka=KAFKA | {"max_in_flight": 5000}, service={"max_pending": 300})
    feed = make_source(s, telemetry())
    assert isinstance(feed.source, KafkaSource)
    assert feed.source.settings.max_in_flight == 299


def test_a_bucket_without_a_kafka_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[kafka\]"):
        make_source(settings(tmp_path), telemetry())


def test_an_s3_source_reads_more_small_objects_at_once_unless_configured(tmp_path: Path) -> None:
    # S3 reads wait on the network: 8 at once queued a 50 objects/s Kafka load.
    fs = settings(tmp_path, source={"type": "fs", "path": str(tmp_path / "src")})
    assert fs.small_in_flight() == 8
    assert settings(tmp_path, kafka=KAFKA).small_in_flight() == 32
    pinned = settings(tmp_path, kafka=KAFKA, service={"max_in_flight": 5})
    assert pinned.small_in_flight() == 5
