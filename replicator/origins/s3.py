"""The S3 origin: current versions of a bucket, read with pinned ranged GETs.

Every GET names the version (``VersionId``) or, on an unversioned bucket,
the ETag (``IfMatch``), so the bytes read all belong to the listed version;
a version that vanished or was overwritten answers 404/412 and is reported
superseded. Objects stream through the caller's window buffer, one ranged
GET of ``origin.read_size`` at a time: never the whole object in memory.
Credentials come from the standard AWS chain.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from replicator.config import S3OriginSettings
from replicator.errors import SourceUnavailableError, StoreError, SupersededError
from replicator.origins import ObjectVersion
from replicator.s3client import (
    SharedClient,
    client_config,
    error_code,
    error_status,
    map_client_error,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

#: Answers meaning "this version is no longer what was listed".
_SUPERSEDED_CODES = {"NoSuchKey", "NoSuchVersion", "PreconditionFailed", "InvalidRange"}
_SUPERSEDED_STATUS = {404, 412, 416}
_PIECE = 1 << 20  # bytes copied from the response stream per read


def _ns(t: datetime) -> int:
    # Integer arithmetic: a float timestamp loses the microseconds.
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def classify(exc: ClientError, key: str) -> Exception:
    """A failed read: the version moved on (SupersededError), else the
    mapping every S3 client shares (403 stays AccessDeniedError: never taken
    for a deletion, a permissions problem must surface)."""
    if error_code(exc) in _SUPERSEDED_CODES or error_status(exc) in _SUPERSEDED_STATUS:
        return SupersededError(
            f"{key!r} vanished or changed before it was read ({error_code(exc)})"
        )
    return map_client_error(exc, f"origin: reading {key!r}")


class S3Origin:
    source_id = "s3"
    etag_is_digest = False

    def __init__(self, bucket: str, prefix: str, cfg: S3OriginSettings) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.cfg = cfg
        self.window_size = cfg.read_size
        # botocore's own retries and timeouts: the origin has no retry layer.
        self._client = SharedClient(
            cfg.endpoint_url,
            client_config(cfg.region, cfg.addressing_style),
            ca_bundle=None if cfg.ca_bundle is None else str(cfg.ca_bundle),
        )
        self.unlisted: list[tuple[str, str]] = []  # a listing is whole or fails

    async def client(self) -> S3Client:
        return await self._client.get()

    async def check(self) -> None:
        """HEAD the bucket: 403 and 404 end the run (exit 2) before anything
        is written, instead of a listing that looks empty or fails later."""
        what = f"source bucket {self.bucket!r}"
        try:
            client = await self.client()
            await client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = error_status(exc)
            code = error_code(exc) or str(status)
            reason = {
                403: "access denied (403): check the credentials and the bucket policy",
                404: "does not exist (404): check source.bucket and origin.endpoint_url",
            }.get(status, f"cannot be read ({code})")
            raise SourceUnavailableError(f"{what} {reason}") from exc
        except BotoCoreError as exc:
            raise SourceUnavailableError(f"{what} cannot be reached: {exc}") from exc

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectVersion]:
        """Latest versions (delete markers excluded), in key order."""
        client = await self.client()
        try:
            if await self._versioned(client):
                async for v in self._list_versions(client, prefix):
                    yield v
            else:
                async for v in self._list_objects(client, prefix):
                    yield v
        except ClientError as exc:
            raise classify(exc, self.prefix + prefix) from exc

    async def _versioned(self, client: S3Client) -> bool:
        """Whether the bucket keeps versions (enabled, or suspended with old ones).

        An unversioned bucket is listed with ListObjectsV2: its ETags are the
        ones GET answers with, which the IfMatch pin needs. (SeaweedFS 4.53
        answers ListObjectVersions on an unversioned bucket with another
        ETag for multipart objects, so pinning to it fails every read.)"""
        resp = await client.get_bucket_versioning(Bucket=self.bucket)
        return resp.get("Status") in ("Enabled", "Suspended")

    async def _list_versions(self, client: S3Client, prefix: str) -> AsyncIterator[ObjectVersion]:
        pages = client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        async for page in pages:
            for v in page.get("Versions", []):
                if v.get("IsLatest"):
                    yield _version(v)

    async def _list_objects(self, client: S3Client, prefix: str) -> AsyncIterator[ObjectVersion]:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        async for page in pages:
            for v in page.get("Contents", []):
                yield _version(v)

    def key_prefix(self, prefix: str) -> str:
        return self.prefix + prefix

    async def refresh(self, obj: ObjectVersion) -> ObjectVersion | None:
        client = await self.client()
        try:
            head = await client.head_object(Bucket=self.bucket, Key=obj.key)
        except ClientError as exc:
            err = classify(exc, obj.key)
            if isinstance(err, SupersededError):
                return None
            raise err from exc
        vid = str(head.get("VersionId") or "")
        return ObjectVersion(
            obj.key,
            int(head["ContentLength"]),
            _ns(head["LastModified"]),
            "" if vid == "null" else vid,
            str(head.get("ETag", "")),
        )

    async def open(self, obj: ObjectVersion) -> S3Reader:
        return S3Reader(await self.client(), self.bucket, obj)

    async def close(self) -> None:
        await self._client.close()


def _version(v: Any) -> ObjectVersion:
    vid = str(v.get("VersionId") or "")
    return ObjectVersion(
        key=v["Key"],
        size=int(v["Size"]),
        event_time_ns=_ns(v["LastModified"]),
        version_id="" if vid == "null" else vid,  # "null": unversioned object
        etag=str(v.get("ETag", "")),
    )


class S3Reader:
    """Ranged GETs pinned to one version, each filling the caller's buffer."""

    def __init__(self, client: S3Client, bucket: str, obj: ObjectVersion) -> None:
        self._client = client
        self._bucket = bucket
        self._obj = obj
        self._pos = 0

    def _pin(self) -> dict[str, str]:
        if self._obj.version_id:
            return {"VersionId": self._obj.version_id}
        return {"IfMatch": self._obj.etag}

    async def readinto(self, buf: memoryview) -> int:
        want = min(len(buf), self._obj.size - self._pos)
        if want <= 0:
            return 0  # a ranged GET past the end would answer 416
        rng = f"bytes={self._pos}-{self._pos + want - 1}"
        key = self._obj.key
        try:
            resp = await self._client.get_object(
                Bucket=self._bucket,
                Key=key,
                Range=rng,
                **self._pin(),  # type: ignore[arg-type]
            )
        except ClientError as exc:
            raise classify(exc, key) from exc
        self._check(resp)
        got = 0
        async with resp["Body"] as body:
            while got < want:
                piece = await body.read(min(_PIECE, want - got))
                if not piece:
                    break
                buf[got : got + len(piece)] = piece
                got += len(piece)
        if got != want:
            raise StoreError(f"origin: short read of {key!r} ({got} of {want} bytes)")
        self._pos += got
        return got

    def _check(self, resp: Any) -> None:
        total = str(resp.get("ContentRange", "")).rpartition("/")[2]
        etag = str(resp.get("ETag", ""))
        if (total and total != "*" and int(total) != self._obj.size) or (
            self._obj.etag and etag and etag != self._obj.etag
        ):
            with contextlib.suppress(Exception):
                resp["Body"].close()
            raise SupersededError(f"{self._obj.key!r} changed before it was read")

    async def finish(self) -> None:
        return None  # every GET was pinned to the listed version

    async def close(self) -> None:
        return None
