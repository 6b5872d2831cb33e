"""A plain (synchronous) botocore S3 client for fixtures: buckets, cleanup."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import botocore.session
from botocore.config import Config


@dataclass(frozen=True)
class S3Endpoint:
    """How to reach a running S3-compatible server, and with which keys."""

    server: str  # "moto" or "seaweedfs"
    url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"

    def client(self, service: str = "s3", *, secret: str | None = None) -> Any:
        session = botocore.session.get_session()
        return session.create_client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret if secret is not None else self.secret_access_key,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 1},
            ),
        )


def empty_and_delete_bucket(client: Any, bucket: str) -> None:
    """Remove every object, every unfinished multipart upload, then the bucket."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    for up in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    client.delete_bucket(Bucket=bucket)


def bucket_keys(client: Any, bucket: str) -> list[str]:
    """Every key in the bucket, read straight from the server."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys
