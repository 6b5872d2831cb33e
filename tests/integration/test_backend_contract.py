"""The contract every peer backend keeps, run on fs, moto and SeaweedFS.

Each case states its figures (sizes, keys, writers) in its output. Where a
server lacks a feature the case is marked with the server and the reason;
docs/s3-compatibility.md records the same results.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import threading
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from replicator.errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientStoreError,
)
from replicator.s3client import map_client_error
from replicator.store.backend import Backend, Capabilities, ObjectInfo, sha256_of
from replicator.store.backends import fs as fs_backend
from replicator.store.backends import fs_batch
from replicator.store.backends.s3 import b64
from tests.integration.conftest import PAGE_SIZE, StoreUnderTest, make_s3_backend
from tests.services import crash_writer
from tests.services.process import free_port
from tests.services.rawhttp import truncated_put
from tests.services.s3client import S3Endpoint, bucket_keys
from tests.services.seaweedfs.server import SeaweedServer

pytestmark = pytest.mark.integration

S3_SERVERS = ["moto", "seaweedfs"]
MIB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[2]


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes (a hash stream)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


async def keys_of(backend: Backend, prefix: str = "", start_after: str = "") -> list[str]:
    return [info.key async for info in backend.list(prefix, start_after=start_after)]


@pytest.mark.parametrize("size", [0, 1, 5 * MIB + 3])
async def test_put_get_round_trip(backend: Backend, size: int) -> None:
    data = pattern(size)
    await backend.put("objects/round-trip", data, sha256=sha256_of(data))
    assert await backend.get("objects/round-trip") == data
    assert await backend.head("objects/round-trip") == ObjectInfo("objects/round-trip", size)
    print(f"round trip of {size} bytes")


async def test_put_replaces(backend: Backend) -> None:
    await backend.put("k", b"first")
    await backend.put("k", b"second value")
    assert await backend.get("k") == b"second value"
    assert await backend.head("k") == ObjectInfo("k", 12)


RANGES = [
    (0, 10),
    (0, None),
    (990, 10),
    (995, 10),  # runs past the end: clamped
    (999, 1),
    (999, None),
    (1000, 5),  # starts at the end
    (5000, None),  # starts past the end
    (500, 0),
]


@pytest.mark.parametrize(("start", "length"), RANGES)
async def test_ranged_get(backend: Backend, start: int, length: int | None) -> None:
    data = pattern(1000, seed=1)
    await backend.put("ranged", data)
    want = data[start:] if length is None else data[start : start + length]
    assert await backend.get("ranged", start, length) == want


async def test_ranged_get_of_empty_object(backend: Backend) -> None:
    await backend.put("empty", b"")
    assert await backend.get("empty", 0, 10) == b""
    assert await backend.get("empty", 3) == b""


async def test_missing_object(backend: Backend) -> None:
    assert await backend.head("no/such/key") is None
    with pytest.raises(NotFoundError):
        await backend.get("no/such/key")
    with pytest.raises(NotFoundError):
        await backend.get("no/such/key", 0, 0)


async def test_put_if_absent_refuses_second_write(backend: Backend) -> None:
    assert await backend.put_if_absent("once", b"original") is True
    assert await backend.put_if_absent("once", b"intruder!") is False
    assert await backend.get("once") == b"original"


async def test_concurrent_put_if_absent_has_one_winner(backend: Backend) -> None:
    writers = 16
    bodies = [pattern(64 * 1024, seed=i) for i in range(writers)]
    results = await asyncio.gather(*(backend.put_if_absent("contended", b) for b in bodies))
    winners = [i for i, won in enumerate(results) if won]
    print(f"{writers} concurrent put_if_absent -> winners {winners}")
    assert len(winners) == 1
    assert await backend.get("contended") == bodies[winners[0]]


@pytest.mark.parametrize("store_kind", ["fs"])
@pytest.mark.parametrize("unnamed", [True, False])
async def test_fs_put_if_absent_decides_at_publish(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """Writer A checked "absent" and wrote its file, then B wins: A must still lose.

    A is held just before it publishes (a deterministic interleaving instead
    of hoping threads collide); a check-then-rename would let A overwrite B.
    Both ways of publishing: linking an unnamed (O_TMPFILE) file, and
    linking a named temporary file where the filesystem has no O_TMPFILE.
    """
    real_publish, real_link = fs_backend._publish, fs_batch._link
    a_ready, b_done = threading.Event(), threading.Event()

    def hold_a() -> None:
        if not a_ready.is_set():  # the first writer to publish is A
            a_ready.set()
            b_done.wait()

    def publish(tmp: Path, path: Path, exclusive: bool) -> bool:
        hold_a()
        return real_publish(tmp, path, exclusive)

    def link(fd: int, tmp: str, path: str) -> bool:
        hold_a()
        return real_link(fd, tmp, path)

    monkeypatch.setattr(fs_backend, "_publish", publish)
    monkeypatch.setattr(fs_batch, "_link", link)
    if not unnamed:
        assert store.root is not None
        store.root.mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(fs_batch, "_no_anonymous", {os.stat(store.root).st_dev})
    a = asyncio.create_task(store.backend.put_if_absent("race", b"A"))
    await asyncio.to_thread(a_ready.wait)
    assert await store.backend.put_if_absent("race", b"B") is True
    b_done.set()
    assert await a is False
    assert await store.backend.get("race") == b"B"


@pytest.mark.parametrize("store_kind", S3_SERVERS)
async def test_put_if_absent_head_then_put_fallback(store: StoreUnderTest) -> None:
    """The documented racy fallback, used when the probe finds no If-None-Match."""
    s3 = store.s3()
    s3.capabilities = Capabilities(False, ("MD5",), False, False)
    assert await s3.put_if_absent("fallback", b"one") is True
    assert await s3.put_if_absent("fallback", b"two") is False
    assert await s3.get("fallback") == b"one"


@pytest.mark.parametrize("conditional", [False, True], ids=["put", "put_if_absent"])
async def test_wrong_checksum_leaves_no_object(store: StoreUnderTest, conditional: bool) -> None:
    backend, data = store.backend, pattern(3 * MIB, seed=2)
    wrong = sha256_of(data + b"!")
    with pytest.raises(IntegrityError):
        if conditional:
            await backend.put_if_absent("bad/checksum", data, sha256=wrong)
        else:
            await backend.put("bad/checksum", data, sha256=wrong)
    assert await backend.head("bad/checksum") is None
    assert await keys_of(backend) == []
    if store.root is not None:  # nothing at all, not even a temporary file
        assert [p.name for p in (store.root / "bad").iterdir()] == []


@pytest.mark.parametrize("header", ["ContentMD5", "ChecksumSHA256"])
@pytest.mark.parametrize(
    "store_kind",
    [
        pytest.param(
            "moto",
            marks=pytest.mark.xfail(
                reason="moto 5.2.5 accepts a wrong Content-MD5 and x-amz-checksum-sha256 "
                "(it verifies neither)",
                strict=True,
            ),
        ),
        "seaweedfs",
    ],
)
async def test_server_refuses_wrong_checksum(store: StoreUnderTest, header: str) -> None:
    """Bypass replicator's own check: the server must verify what it received."""
    data = b"bytes that were altered in transit"
    wrong = {"ContentMD5": hashlib.md5(b"x").digest(), "ChecksumSHA256": sha256_of(b"x")}[header]
    with pytest.raises(IntegrityError):
        await store.s3()._call(
            "raw put", "put_object", Key="tampered", Body=data, **{header: b64(wrong)}
        )
    assert bucket_keys(store.admin, store.bucket) == []


@pytest.mark.parametrize("store_kind", S3_SERVERS)
async def test_incomplete_upload_leaves_no_object(store: StoreUnderTest) -> None:
    assert store.endpoint is not None
    declared, sent = 4 * MIB, MIB + 17
    answer = truncated_put(store.endpoint, store.bucket, "cut/short", declared=declared, sent=sent)
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    print(f"{store.kind}: sent {sent} of {declared} declared bytes, server said {status!r}")
    assert await store.backend.head("cut/short") is None
    assert bucket_keys(store.admin, store.bucket) == []


@pytest.mark.parametrize("failpoint", ["write", "fsync"])
@pytest.mark.parametrize("store_kind", ["fs"])
async def test_crash_mid_write_leaves_no_object(store: StoreUnderTest, failpoint: str) -> None:
    assert store.root is not None
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.services.crash_writer", str(store.root), failpoint,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,  # so that "tests.services" imports in the child
    )  # fmt: skip
    assert child.stdout is not None
    line = await child.stdout.readline()
    if line != b"at-failpoint\n":
        _, err = await child.communicate()
        pytest.fail(f"writer did not reach the failpoint: {err.decode()}")
    os.kill(child.pid, signal.SIGKILL)
    await child.communicate()
    leftovers = [p.name for p in (store.root / "ckpt").iterdir()]
    print(f"writer killed at {failpoint!r}; files left in the directory: {leftovers}")
    assert len(leftovers) == 1  # the temporary file: proof the crash was mid-write
    assert await store.backend.head(crash_writer.KEY) is None
    assert await keys_of(store.backend) == []
    await store.backend.put(crash_writer.KEY, b"after restart")
    assert await keys_of(store.backend) == [crash_writer.KEY]


async def test_listing_pages(backend: Backend) -> None:
    keys = [f"packs/{i:03d}" for i in range(3 * PAGE_SIZE + 2)]
    await asyncio.gather(*(backend.put(k, k.encode()) for k in keys))
    listed = [info async for info in backend.list("packs/")]
    print(f"{len(keys)} keys listed in pages of {PAGE_SIZE}")
    assert [i.key for i in listed] == keys
    assert all(i.size == len(i.key) for i in listed)
    resumed = await keys_of(backend, "packs/", start_after=keys[PAGE_SIZE + 1])
    assert resumed == keys[PAGE_SIZE + 2 :]


# No key here is also a "directory" of another ("a/b" with "a/b/c"): a
# filesystem cannot hold both, and content-addressed keys never need it.
ORDER_KEYS = ["a/b", "a/c/d", "a-c", "ab", "a b", "a+b", "b", "z", "é/x", "ä", "a/~", "a0"]


async def test_list_order_and_prefix(backend: Backend) -> None:
    await asyncio.gather(*(backend.put(k, b"x") for k in ORDER_KEYS))
    by_bytes = sorted(ORDER_KEYS, key=lambda k: k.encode())
    assert await keys_of(backend) == by_bytes
    assert await keys_of(backend, "a/") == ["a/b", "a/c/d", "a/~"]
    assert await keys_of(backend, "a") == [k for k in by_bytes if k.startswith("a")]
    assert await keys_of(backend, "a/c") == ["a/c/d"]
    assert await keys_of(backend, "nothing/") == []
    assert await keys_of(backend, start_after="a0") == [k for k in by_bytes if k > "a0"]


async def test_delete_is_idempotent(backend: Backend) -> None:
    await backend.put("gone/soon", b"bytes")
    await backend.delete("gone/soon")
    await backend.delete("gone/soon")
    await backend.delete("never/existed")
    assert await backend.head("gone/soon") is None
    assert await keys_of(backend) == []


SPECIAL_KEYS = [
    "with space/file name.bin",
    "plus+sign/a+b",
    "utf8/ключ/键/ü",
    unicodedata.normalize("NFD", "utf8/é-decomposed"),
    "percent%20not-decoded",
    "tilde~and=equals&amp;",
]


async def test_special_keys_round_trip(backend: Backend) -> None:
    for i, key in enumerate(SPECIAL_KEYS):
        await backend.put(key, f"{i}".encode())
    for i, key in enumerate(SPECIAL_KEYS):
        assert await backend.get(key) == f"{i}".encode(), key
    assert await keys_of(backend) == sorted(SPECIAL_KEYS, key=lambda k: k.encode())


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "../x", "a/../b", "a/./b", "a/", ".replicator-tmp-x", "a/\x00"]
)
async def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        await backend.put(key, b"x")
    with pytest.raises(ValueError):
        await backend.head(key)


@pytest.mark.parametrize("store_kind", S3_SERVERS)
async def test_bad_credentials_are_access_denied(store: StoreUnderTest) -> None:
    await store.backend.put("secret/object", b"x")
    assert store.endpoint is not None
    wrong_secret = "canary-" + os.urandom(8).hex()
    intruder = make_s3_backend(store.endpoint, store.bucket, secret=wrong_secret)
    calls = [
        intruder.head("secret/object"),  # never None: 403 is not "missing"
        intruder.head("secret/missing"),
        intruder.get("secret/object"),
        intruder.put("secret/object", b"overwrite"),
        keys_of(intruder),
    ]
    try:
        for call in calls:
            with pytest.raises(AccessDeniedError) as info:
                await call
            shown = f"{info.value!r} {info.value} {info.value.__cause__} {intruder!r}"
            assert wrong_secret not in shown
            assert store.endpoint.secret_access_key not in shown
    finally:
        await intruder.close()
    assert await store.backend.get("secret/object") == b"x"
    print(f"{store.kind}: {len(calls)} calls with a wrong secret, each AccessDeniedError")


@pytest.mark.parametrize("store_kind", ["seaweedfs"])
async def test_read_only_identity_cannot_write(
    store: StoreUnderTest, seaweed_server: SeaweedServer
) -> None:
    """Valid credentials without write permission: 403 on put, reads work."""
    await store.backend.put("shared", b"x")
    reader = make_s3_backend(seaweed_server.reader, store.bucket)
    try:
        assert await reader.get("shared") == b"x"
        with pytest.raises(AccessDeniedError):
            await reader.put("shared", b"y")
    finally:
        await reader.close()


async def test_unreachable_server_is_transient() -> None:
    endpoint = S3Endpoint("none", f"http://127.0.0.1:{free_port()}", "AKID", "secret")
    backend = make_s3_backend(endpoint, "no-bucket")
    try:
        with pytest.raises(TransientStoreError):
            await backend.head("k")
    finally:
        await backend.close()


def _client_error(status: int, code: str, message: str = "") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (403, "AccessDenied", AccessDeniedError),
        (403, "SignatureDoesNotMatch", AccessDeniedError),
        (404, "NoSuchKey", NotFoundError),
        (400, "BadDigest", IntegrityError),
        (400, "InvalidDigest", IntegrityError),
        (400, "XAmzContentSHA256Mismatch", IntegrityError),
        (500, "InternalError", TransientStoreError),
        (503, "SlowDown", TransientStoreError),
        (400, "RequestTimeout", TransientStoreError),
        (409, "ConditionalRequestConflict", TransientStoreError),
        (412, "PreconditionFailed", StoreError),
        (400, "InvalidArgument", StoreError),
    ],
)
def test_s3_error_mapping(status: int, code: str, error: type[StoreError]) -> None:
    """The table that real servers' answers above go through (some are hard to provoke)."""
    mapped = map_client_error(_client_error(status, code), "op")
    assert type(mapped) is error
    assert mapped.retriable == (error is TransientStoreError)


EXPECTED_CAPABILITIES = {
    "fs": Capabilities(True, ("SHA256",), True, False, ("SHA256",)),
    "moto": Capabilities(True, ("MD5", "SHA256", "SHA1", "CRC32"), False, True, ()),
    "seaweedfs": Capabilities(
        True, ("MD5", "SHA256", "SHA1", "CRC32"), True, True, ("MD5", "SHA256", "SHA1", "CRC32")
    ),
}


async def test_probe(store: StoreUnderTest) -> None:
    caps = await store.backend.probe()
    print(f"{store.kind}: {caps}")
    assert caps == EXPECTED_CAPABILITIES[store.kind]
    assert await keys_of(store.backend) == []  # the probe leaves nothing behind
    if store.admin is not None:
        assert bucket_keys(store.admin, store.bucket) == []
        uploads = store.admin.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        assert uploads == []
    if store.root is not None:
        assert list(store.root.iterdir()) == []
