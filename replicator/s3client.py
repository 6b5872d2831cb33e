"""The one S3 client factory and error mapping, for the S3 origin and S3 peers.

Both build their aiobotocore client here (:class:`SharedClient`), with the
same settings: ``request_checksum_calculation = response_checksum_validation
= "when_required"``, because botocore >= 1.36 would otherwise add CRC
checksums that some S3-compatible servers reject (or the aws-chunked
encoding they come in); replicator sends the checksums it computes itself.
A peer turns botocore's retries off (``attempts=1``: RetryingBackend retries,
seeing the mapped errors); the origin keeps botocore's own.

Errors map by behaviour into replicator's tree (:func:`map_error`): checksum
refusals are IntegrityError, 403 AccessDeniedError, 404 NotFoundError, 5xx,
429, throttling and dropped connections TransientStoreError. The origin adds
its one rule on top (404/412/416 while reading: the version moved on).

Credentials come from the standard AWS chain unless given explicitly; they
never appear in ``repr`` or a message. Imported only by the S3 origin and
backend: aiobotocore costs about a second of start-up.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from replicator.errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientStoreError,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

AddressingStyle = Literal["auto", "path", "virtual"]

_INTEGRITY_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        # AWS: concurrent conditional writes; a retry learns the winner (412).
        "ConditionalRequestConflict",
        "OperationAborted",
    }
)
_DENIED_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound"})


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """Explicit static credentials; the secret never appears in repr."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def error_code(exc: ClientError) -> str:
    """The S3 error code (``NoSuchKey``, ``SlowDown``, ...), or ''."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_status(exc: ClientError) -> int:
    """The HTTP status of the answer, or 0."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def map_client_error(exc: ClientError, what: str) -> StoreError:
    """Turn a botocore ClientError into the store's error tree (by behaviour)."""
    err = exc.response.get("Error", {})
    code, status = error_code(exc), error_status(exc)
    detail = f"{what}: {code or status} {err.get('Message', '')}".strip()
    if code in _INTEGRITY_CODES or "checksum" in code.lower():
        return IntegrityError(detail)
    if status == 403 or code in _DENIED_CODES:
        return AccessDeniedError(detail)
    if status == 404 or code in _NOT_FOUND_CODES:
        return NotFoundError(detail)
    if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
        return TransientStoreError(detail)
    if status == 400 and "checksum" in str(err.get("Message", "")).lower():
        return IntegrityError(detail)
    return StoreError(detail)


def map_error(exc: BaseException, what: str) -> StoreError | None:
    """Map any exception raised by a client call; None when it is not ours to map."""
    if isinstance(exc, ClientError):
        return map_client_error(exc, what)
    if isinstance(
        exc,
        HTTPClientError | BotoConnectionError | IncompleteReadError | aiohttp.ClientError,
    ):
        return TransientStoreError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return TransientStoreError(f"{what}: no answer within the read timeout")
    if isinstance(exc, BotoCoreError):
        return StoreError(f"{what}: {type(exc).__name__}")
    return None


def client_config(
    region: str | None,
    addressing_style: AddressingStyle,
    *,
    attempts: int | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_pool_connections: int | None = None,
) -> AioConfig:
    """The client settings; None keeps botocore's default for that one."""
    extra: dict[str, Any] = {}
    if attempts is not None:
        extra["retries"] = {"total_max_attempts": attempts, "mode": "standard"}
    if connect_timeout is not None:
        extra["connect_timeout"] = connect_timeout
    if read_timeout is not None:
        extra["read_timeout"] = read_timeout
    if max_pool_connections is not None:
        extra["max_pool_connections"] = max_pool_connections
    return AioConfig(
        region_name=region,
        # Send only the checksums replicator computes itself (see module doc).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": addressing_style},
        **extra,
    )


class SharedClient:
    """One aiobotocore S3 client, created on first use and shared by every
    task of its owner (the origin, or one peer) until :meth:`close`."""

    def __init__(
        self,
        endpoint_url: str | None,
        config: AioConfig,
        *,
        ca_bundle: str | None = None,
        credentials: S3Credentials | None = None,
        profile: str | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.config = config
        self._ca_bundle = ca_bundle
        self._credentials = credentials
        self._profile = profile
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SharedClient(endpoint_url={self.endpoint_url!r})"

    async def get(self) -> S3Client:
        """The client, created by the first caller (the others wait for it)."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._open()
        return self._client

    async def _open(self) -> S3Client:
        session = get_session()
        if self._profile:
            session.set_config_variable("profile", self._profile)
        kwargs: dict[str, Any] = {}
        if self._credentials is not None:
            kwargs = {
                "aws_access_key_id": self._credentials.access_key_id,
                "aws_secret_access_key": self._credentials.secret_access_key,
                "aws_session_token": self._credentials.session_token,
            }
        if self._ca_bundle is not None:
            kwargs["verify"] = self._ca_bundle  # TLS verification stays on, with this CA
        stack = AsyncExitStack()
        client: S3Client = await stack.enter_async_context(
            session.create_client(
                "s3", endpoint_url=self.endpoint_url, config=self.config, **kwargs
            )
        )
        self._stack = stack
        return client

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
