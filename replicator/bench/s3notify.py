"""S3 event notifications as AWS sends them, for objects the bench really wrote.

The bench plays the storage system: after each PUT it produces the
``ObjectCreated:Put`` notification AWS would publish (event message
structure 2.1: ``{"Records": [...]}``, key URL-encoded with ``+`` for a
space, ``eventTime`` in milliseconds, a hex sequencer that grows per key).
The daemon parses it with ``replicator.sources.s3events`` like any other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus


def iso_ms(ns: int) -> str:
    """``2026-12-01T12:00:00.123Z``: the precision AWS gives ``eventTime``."""
    t = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 1_000_000 % 1000:03d}Z"


def created_record(
    bucket: str, key: str, *, size: int, etag: str, version_id: str, sequencer: str, time_ns: int
) -> dict[str, Any]:
    """One ``ObjectCreated:Put`` record (``versionId`` only on versioned buckets)."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag}
    if version_id:
        obj["versionId"] = version_id
    obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": iso_ms(time_ns),
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:replicator-bench"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": sequencer, "x-amz-id-2": "replicator-bench"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "replicator-bench",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "replicator-bench"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def message(*records: dict[str, Any]) -> bytes:
    return json.dumps({"Records": list(records)}).encode()
