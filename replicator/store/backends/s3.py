"""A peer kept in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, SeaweedFS).

Objects live at ``<prefix><key>``. Every put carries Content-MD5 and
x-amz-checksum-sha256 computed by replicator, so a server that verifies
either refuses a body that was altered or cut in transit. The client and
the error mapping are the ones the S3 origin uses too
(:mod:`replicator.s3client`); botocore's own retries are off here:
retrying is the job of ``replicator.store.retry``, which sees the mapped
errors.

Credentials come from the standard AWS chain (env vars, shared files,
instance roles) unless given explicitly; they are never logged or shown in
``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from replicator.errors import (
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientStoreError,
)
from replicator.s3client import (
    AddressingStyle,
    S3Credentials,
    SharedClient,
    client_config,
    error_code,
    error_status,
    map_client_error,
    map_error,
)
from replicator.store.backend import Capabilities, ObjectInfo, Payload, check_key, check_prefix

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

__all__ = ["MIN_PUT_RATE", "S3Backend", "S3Credentials", "b64", "map_client_error", "map_error"]

#: Slowest upload accepted (bytes/s): a put of N bytes fails after
#: connect + read timeout + N / MIN_PUT_RATE seconds (80 s for a 16 MiB pack).
MIN_PUT_RATE = 256 * 1024


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _digests(data: Payload) -> tuple[bytes, bytes]:
    return hashlib.md5(data, usedforsecurity=False).digest(), hashlib.sha256(data).digest()


class S3Backend:
    """One bucket (and key prefix) of an S3-compatible server."""

    def __init__(
        self,
        name: str,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: AddressingStyle = "auto",
        credentials: S3Credentials | None = None,
        profile: str | None = None,
        page_size: int = 1000,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 32,
        min_put_rate: float = MIN_PUT_RATE,
        ca_bundle: str | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            raise ValueError("prefix must be empty or end with '/'")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be in 1..1000 (S3's MaxKeys)")
        self.name = name
        self.bucket = bucket
        self.prefix = check_prefix(prefix)
        self.endpoint_url = endpoint_url
        self.region = region
        self.page_size = page_size
        # The read timeout only starts once a body is sent: a server that
        # stops reading mid-upload would stall a put for ever without this.
        self._put_budget = (connect_timeout + read_timeout, min_put_rate)
        self._client = SharedClient(
            endpoint_url,
            client_config(
                region,
                addressing_style,
                attempts=1,  # RetryingBackend retries, seeing the mapped errors
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=max_pool_connections,
            ),
            ca_bundle=ca_bundle,
            credentials=credentials,
            profile=profile,
        )
        #: Set by probe(); None means "not probed", and conditional puts are used.
        self.capabilities: Capabilities | None = None
        self._warned_racy = False

    def __repr__(self) -> str:
        return (
            f"S3Backend(name={self.name!r}, bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    async def client(self) -> S3Client:
        """The shared client, created on first use."""
        return await self._client.get()

    async def close(self) -> None:
        await self._client.close()

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _where(self, full_key: str) -> str:
        """The destination and the object's URL, for messages."""
        return f"destination {self.name!r} s3://{self.bucket}/{full_key}"

    async def _call(self, what: str, op: str, **kwargs: Any) -> Any:
        """Run one client operation, mapping its errors to the store's tree."""
        client = await self.client()
        try:
            return await getattr(client, op)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            mapped = map_error(exc, what)
            if mapped is None:
                raise
            raise mapped from exc

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        await self._put(key, data, sha256, conditional=False)

    async def put_if_absent(self, key: str, data: Payload, *, sha256: bytes | None = None) -> bool:
        if self.capabilities is not None and not self.capabilities.put_if_absent:
            return await self._put_after_head(key, data, sha256)
        return await self._put(key, data, sha256, conditional=True)

    async def _put_after_head(self, key: str, data: Payload, sha256: bytes | None) -> bool:
        # The probe found no If-None-Match support: check then write. Racy
        # (two writers can both see "absent"); safe only because keys are
        # content-addressed, so both write the same bytes.
        if not self._warned_racy:
            log.warning("peer %s lacks conditional puts: using racy head-then-put", self.name)
            self._warned_racy = True
        if await self.head(key) is not None:
            return False
        await self._put(key, data, sha256, conditional=False)
        return True

    async def _put(
        self, key: str, data: Payload, sha256: bytes | None, *, conditional: bool
    ) -> bool:
        full = self._key(key)
        # One thread hop for both digests: hashlib releases the GIL on large buffers.
        md5, actual = await asyncio.to_thread(_digests, data)
        if sha256 is not None and sha256 != actual:
            raise IntegrityError(
                f"put {self._where(full)}: sha256 of data {actual.hex()} != expected {sha256.hex()}"
            )
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
        fixed, rate = self._put_budget
        deadline = fixed + len(data) / rate
        try:
            async with asyncio.timeout(deadline):
                await self._call(
                    f"put {self._where(full)}",
                    "put_object",
                    Key=full,
                    Body=data if isinstance(data, bytes) else bytes(data),  # aiohttp wants bytes
                    ContentLength=len(data),
                    ContentMD5=b64(md5),
                    ChecksumSHA256=b64(actual),
                    **extra,
                )
        except TimeoutError as exc:
            raise TransientStoreError(
                f"put {self._where(full)}: {len(data)} bytes not accepted within {deadline:.0f} s"
            ) from exc
        except StoreError as exc:
            cause = exc.__cause__
            if conditional and isinstance(cause, ClientError) and error_status(cause) == 412:
                return False
            raise
        return True

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if start < 0 or (length is not None and length < 0):
            raise ValueError("start and length must be >= 0")
        full = self._key(key)
        if length == 0:
            if await self.head(key) is None:
                raise NotFoundError(f"get {self._where(full)}: no object")
            return b""
        ranged = bool(start) or length is not None
        kwargs: dict[str, Any] = {"Key": full}
        if ranged:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        try:
            resp = await self._call(f"get {self._where(full)}", "get_object", **kwargs)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and error_status(cause) == 416:
                return b""  # the range starts at or past the end: an empty slice
            raise
        data = await self._read_body(resp, full)
        if ranged and "ContentRange" not in resp:
            # The server ignored Range and sent the whole object: cut it here.
            return data[start:] if length is None else data[start : start + length]
        return data

    async def _read_body(self, resp: Any, full: str) -> bytes:
        try:
            async with resp["Body"] as body:
                data: bytes = await body.read()  # checks the length against Content-Length
                return data
        except Exception as exc:
            mapped = map_error(exc, f"get {self._where(full)} (body)")
            if mapped is None:
                raise
            raise mapped from exc

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            full = self._key(key)
            resp = await self._call(f"head {self._where(full)}", "head_object", Key=full)
        except NotFoundError:
            return None
        return ObjectInfo(key, int(resp["ContentLength"]))

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        kwargs: dict[str, Any] = {
            "Prefix": self.prefix + check_prefix(prefix),
            "MaxKeys": self.page_size,
        }
        if start_after:
            kwargs["StartAfter"] = self.prefix + start_after
        cut = len(self.prefix)
        while True:
            what = f"list {self._where(kwargs['Prefix'])}"
            resp = await self._call(what, "list_objects_v2", **kwargs)
            for obj in resp.get("Contents", []):
                yield ObjectInfo(obj["Key"][cut:], int(obj["Size"]))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    async def delete(self, key: str) -> None:
        try:
            full = self._key(key)
            await self._call(f"delete {self._where(full)}", "delete_object", Key=full)
        except NotFoundError as exc:
            # S3 answers 204 for a missing key; some servers say NoSuchKey.
            # A missing bucket is still an error.
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and error_code(cause) == "NoSuchKey"):
                raise

    async def probe(self) -> Capabilities:
        from replicator.store.backends.s3_probe import run_probe  # noqa: PLC0415 - cycle

        self.capabilities = await run_probe(self)
        return self.capabilities
