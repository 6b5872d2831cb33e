"""The start-up capability probe of an S3-compatible peer.

Everything is measured, nothing is taken from a server's documentation:
a second conditional put must really be refused, a wrong checksum must
really be refused, and a ranged UploadPartCopy must really produce the
right bytes. Probe objects live under ``<prefix>.replicator-probe-<id>/``
(a segment no store key may use) and are removed before returning, also
when a step fails.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from replicator.errors import IntegrityError, StoreError
from replicator.store.backend import RESERVED_SEGMENT_PREFIX, Capabilities

if TYPE_CHECKING:
    from replicator.store.backends.s3 import S3Backend

_BODY = b"replicator capability probe: 0123456789abcdefghijklmnopqrstuvwxyz"
_WRONG = b"not the body"


def _b64(d: bytes) -> str:
    return base64.b64encode(d).decode("ascii")


def _crc32(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


#: algorithm name -> (put_object parameter, digest function)
_ALGORITHMS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "MD5": ("ContentMD5", lambda d: hashlib.md5(d, usedforsecurity=False).digest()),
    "SHA256": ("ChecksumSHA256", lambda d: hashlib.sha256(d).digest()),
    "SHA1": ("ChecksumSHA1", lambda d: hashlib.sha1(d, usedforsecurity=False).digest()),
    "CRC32": ("ChecksumCRC32", _crc32),
}
#: What S3Backend.put sends on every put; verifying one of them is enough.
_SENT_ON_PUT = ("MD5", "SHA256")


async def run_probe(backend: S3Backend) -> Capabilities:
    base = f"{backend.prefix}{RESERVED_SEGMENT_PREFIX}probe-{secrets.token_hex(6)}/"
    written: list[str] = []
    try:
        conditional = await _probe_conditional(backend, base + "conditional", written)
        accepted, verified = await _probe_checksums(backend, base, written)
        part_copy = await _probe_part_copy(backend, base, written)
    finally:
        for key in written:
            await backend._call(f"probe cleanup {backend._where(key)}", "delete_object", Key=key)
    return Capabilities(
        put_if_absent=conditional,
        checksum_algorithms=accepted,
        verifies_checksums=any(a in verified for a in _SENT_ON_PUT),
        ranged_upload_part_copy=part_copy,
        verified_algorithms=verified,
    )


async def _put(backend: S3Backend, key: str, written: list[str], **kwargs: Any) -> None:
    if key not in written:
        written.append(key)  # before the call: a failed put may still have stored
    await backend._call(
        f"probe put {backend._where(key)}", "put_object", Key=key, Body=_BODY, **kwargs
    )


async def _probe_conditional(backend: S3Backend, key: str, written: list[str]) -> bool:
    try:
        await _put(backend, key, written, IfNoneMatch="*")
    except StoreError:
        return False  # e.g. 501 NotImplemented for the header
    try:
        await _put(backend, key, written, IfNoneMatch="*")
    except StoreError as exc:
        status = getattr(exc.__cause__, "response", {}).get("ResponseMetadata", {})
        return bool(status.get("HTTPStatusCode") == 412)
    return False  # the server ignored the header and overwrote


async def _probe_checksums(
    backend: S3Backend, base: str, written: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    accepted: list[str] = []
    verified: list[str] = []
    for algo, (param, digest) in _ALGORITHMS.items():
        try:
            await _put(backend, f"{base}good-{algo}", written, **{param: _b64(digest(_BODY))})
        except StoreError:
            continue
        accepted.append(algo)
        if await _refuses_wrong(backend, f"{base}bad-{algo}", written, param, digest):
            verified.append(algo)
    return tuple(accepted), tuple(verified)


async def _refuses_wrong(
    backend: S3Backend,
    key: str,
    written: list[str],
    param: str,
    digest: Callable[[bytes], bytes],
) -> bool:
    try:
        await _put(backend, key, written, **{param: _b64(digest(_WRONG))})
    except IntegrityError:
        # Refused as a checksum mismatch; it only counts if nothing was stored.
        listing = await backend._call(
            f"probe list {backend._where(key)}", "list_objects_v2", Prefix=key
        )
        return not listing.get("KeyCount")
    except StoreError:
        return False  # refused for another reason: not evidence of verification
    return False


async def _probe_part_copy(backend: S3Backend, base: str, written: list[str]) -> bool:
    """A one-part multipart upload whose part is a byte range of another object."""
    source, target = base + "copy-source", base + "copy-target"
    try:
        await _put(backend, source, written)
        written.append(target)
        mpu = await backend._call(
            f"probe mpu {backend._where(target)}", "create_multipart_upload", Key=target
        )
    except StoreError:
        return False
    upload_id = mpu["UploadId"]
    try:
        part = await backend._call(
            f"probe part copy {backend._where(target)}",
            "upload_part_copy",
            Key=target,
            UploadId=upload_id,
            PartNumber=1,
            CopySource={"Bucket": backend.bucket, "Key": source},
            CopySourceRange="bytes=10-29",
        )
        await backend._call(
            f"probe complete {backend._where(target)}",
            "complete_multipart_upload",
            Key=target,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
        )
    except StoreError:
        await _abort(backend, target, upload_id)
        return False
    resp = await backend._call(f"probe get {backend._where(target)}", "get_object", Key=target)
    async with resp["Body"] as body:
        got: bytes = await body.read()
    return got == _BODY[10:30]


async def _abort(backend: S3Backend, key: str, upload_id: str) -> None:
    # Nothing was completed; if the abort fails too, the server expires the upload.
    with contextlib.suppress(StoreError):
        await backend._call(
            f"probe abort {backend._where(key)}",
            "abort_multipart_upload",
            Key=key,
            UploadId=upload_id,
        )
