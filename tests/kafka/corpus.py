"""S3 event notifications in the shapes AWS, MinIO and Ceph RGW really send.

Builders (not canned strings) so tests can announce objects they really wrote:
each returns the message bytes exactly as the storage system would put them on
Kafka. Field sets follow each system's documented/emitted structure: AWS's
event message structure 2.1, MinIO's Kafka target envelope (``event.Log``),
Ceph RGW's ``rgw_pubsub_s3_event`` (raw key, size possibly a string).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote_plus

AWS_TEST_EVENT = json.dumps(
    {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-30T10:00:00.000Z",
        "Bucket": "training-data",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
).encode()


def _object(key: str, size: int | str | None, etag: str, version: str, seq: str) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key}
    if size is not None:
        obj["size"] = size
    if etag:
        obj["eTag"] = etag
    if version is not None:
        obj["versionId"] = version
    obj["sequencer"] = seq
    return obj


def aws_record(
    bucket: str,
    key: str,
    *,
    name: str = "ObjectCreated:Put",
    size: int | None = 0,
    etag: str = "",
    version: str = "",
    sequencer: str = "0055AED6DCD90281E5",
    time: str = "2026-11-30T10:00:01.123Z",
) -> dict[str, Any]:
    obj = _object(quote_plus(key, safe="/"), size, etag, version, sequencer)
    if not version:
        del obj["versionId"]  # unversioned buckets: AWS omits the field
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": time,
        "eventName": name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.9"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "replicator",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def aws_message(*records: dict[str, Any]) -> bytes:
    return json.dumps({"Records": list(records)}).encode()


def minio_message(
    bucket: str,
    key: str,
    *,
    name: str = "s3:ObjectCreated:Put",
    size: int | None = 0,
    etag: str = "",
    version: str = "",
    sequencer: str = "187B9D2C3A7E51F0",
    time: str = "2026-11-30T10:00:01.123Z",
) -> bytes:
    """MinIO's Kafka target: an ``event.Log`` envelope around one record."""
    obj = _object(quote_plus(key), size, etag, version, sequencer)
    obj |= {"contentType": "application/octet-stream", "userMetadata": {}}
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": time,
        "eventName": name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "::1"},
        "responseElements": {
            "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
            "x-amz-request-id": "187B9D2C3A5F1A2B",
            "x-minio-deployment-id": "8a3e2c0e-5b2b-4a8e-9d4f-0c4e3a1b2c3d",
            "x-minio-origin-endpoint": "http://127.0.0.1:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": "::1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7"},
    }
    envelope = {"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]}
    return json.dumps(envelope).encode()


def ceph_message(
    bucket: str,
    key: str,
    *,
    name: str = "ObjectCreated:Put",
    size: int | str | None = "0",
    etag: str = "",
    version: str = "",
    sequencer: str = "F7E6D75DC742D108",
    time: str = "2026-11-30T10:00:01.124724Z",
) -> bytes:
    """Ceph RGW's Kafka notification: raw key, size as text, empty versionId."""
    record = {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "default",
        "eventTime": time,
        "eventName": name,
        "userIdentity": {"principalId": "tester"},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {
            "x-amz-request-id": "b0f2b1b4-7b8a-4d0b-9e0e-4b4a0a0d0c0b.4137.1",
            "x-amz-id-2": "1029-default-default",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "replicator",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "tester"},
                "arn": f"arn:aws:s3:default::{bucket}",
                "id": "b0f2b1b4-7b8a-4d0b-9e0e-4b4a0a0d0c0b.4139.1",
            },
            "object": _object(key, size, etag, version, sequencer) | {"metadata": [], "tags": []},
        },
        "eventId": "1700000000.124724.37b51d194a7513e45b56f6524f2d51f2",
        "opaqueData": "",
    }
    return json.dumps({"Records": [record]}).encode()


#: Messages that must land in the dead-letter topic, with the reason's gist.
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty"),
    (b"not json at all", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2, 3]", "JSON object"),
    (b'{"Records": "x"}', "must be a list"),
    (b'{"Records": []}', "empty"),
    (b'{"Records": [42]}', "Records[0] must be a JSON object"),
    (b"{" * 5000 + b"}" * 5000, "not JSON"),
    (b'{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": NaN}]}', "not JSON"),
    (aws_message(aws_record("b", "k", name="ObjectExploded:Boom")), "unknown event name"),
    (aws_message(aws_record("b", "k", time="yesterday")), "eventTime"),
    (aws_message(aws_record("b", "k", time="2026-02-30T00:00:00Z")), "no such date"),
    (aws_message(aws_record("b", "k", size=None)), "size is missing"),
    (aws_message(aws_record("b", "k") | {"eventVersion": "1.0"}), "not 2.x"),
    (aws_message(aws_record("", "k")), "bucket.name is empty"),
    (
        json.dumps(
            {"Records": [aws_record("b", "k") | {"s3": {"bucket": {"name": "b"}}}]}
        ).encode(),
        "s3.object must be a JSON object",
    ),
    (
        aws_message(aws_record("b", "k") | {"eventName": 7}),
        "eventName must be a string",
    ),
    (json.dumps({"EventName": "s3:ObjectCreated:Put", "Records": []}).encode(), "Key is missing"),
    (ceph_message("b", "k", size="12x"), "size must be a non-negative integer"),
    (ceph_message("b", "k", size=True), "size must be a non-negative integer"),
    (aws_message(aws_record("b", "k", size=-1)), "non-negative"),
    (aws_message(aws_record("b", "x" * 2000)), "longer than 1024"),
]


def raw_key_message(raw_key: str) -> bytes:
    """An AWS record whose key field is exactly ``raw_key`` (no quoting)."""
    record = aws_record("b", "placeholder")
    record["s3"]["object"]["key"] = raw_key
    return aws_message(record)


MALFORMED += [
    (raw_key_message("bad%zzescape"), "invalid %-escape"),
    (raw_key_message("truncated%4"), "invalid %-escape"),
    (raw_key_message("latin1%E9"), "not UTF-8"),
    (raw_key_message("lone\ud800surrogate"), "not valid Unicode"),
    (raw_key_message("%F0%41%41"), "not UTF-8"),
    (raw_key_message("a" * 1025), "longer than 1024"),
]
