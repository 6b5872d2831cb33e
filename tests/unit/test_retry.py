"""RetryingBackend: which errors are retried, how often, and how long it waits.

The backend under the wrapper is a deterministic in-test double (a dict
that fails on a script), because what is tested is the retry logic, not
storage; storage itself is tested by the contract suite on real servers.
Sleeps are recorded instead of slept, and the RNG is seeded.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    ReplicatorError,
    StoreError,
    TransientStoreError,
)
from replicator.store.backend import Backend, Capabilities, ObjectInfo, Payload
from replicator.store.retry import RetryingBackend, RetryPolicy


class FlakyBackend:
    """A dict of objects whose operations raise the scripted errors first."""

    name = "flaky"

    def __init__(self, failures: list[ReplicatorError] | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.failures = list(failures or [])
        self.calls = 0
        #: In list(): fail (with the next scripted error) after yielding this many keys.
        self.list_fail_after: list[int] = []

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        self._maybe_fail()
        self.objects[key] = bytes(data)

    async def put_if_absent(self, key: str, data: Payload, *, sha256: bytes | None = None) -> bool:
        self._maybe_fail()
        if key in self.objects:
            return False
        self.objects[key] = bytes(data)
        return True

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail()
        if key not in self.objects:
            raise NotFoundError(key)
        data = self.objects[key]
        return data[start:] if length is None else data[start : start + length]

    async def head(self, key: str) -> ObjectInfo | None:
        self._maybe_fail()
        return ObjectInfo(key, len(self.objects[key])) if key in self.objects else None

    async def list(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        self.calls += 1
        limit = self.list_fail_after.pop(0) if self.list_fail_after else None
        for n, key in enumerate(k for k in sorted(self.objects) if k > start_after):
            if n == limit:
                raise self.failures.pop(0)
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key]))

    async def delete(self, key: str) -> None:
        self._maybe_fail()
        self.objects.pop(key, None)

    async def probe(self) -> Capabilities:
        self._maybe_fail()
        return Capabilities(True, ("SHA256",), True, False)

    async def close(self) -> None:
        return None


def wrap(
    inner: FlakyBackend, attempts: int = 4, seed: int = 7
) -> tuple[RetryingBackend, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(attempts=attempts, base_delay=0.5, max_delay=3.0)
    return RetryingBackend(inner, policy, rng=random.Random(seed), sleep=sleep), slept


def test_wrapper_is_a_backend() -> None:
    assert isinstance(wrap(FlakyBackend())[0], Backend)


async def test_transient_errors_are_retried_until_success() -> None:
    inner = FlakyBackend([TransientStoreError("503"), TransientStoreError("reset")])
    backend, slept = wrap(inner)
    await backend.put("k", b"v")
    assert inner.objects == {"k": b"v"}
    assert inner.calls == 3
    assert len(slept) == 2
    assert backend.retries == 2


async def test_attempts_are_bounded() -> None:
    inner = FlakyBackend([TransientStoreError(str(i)) for i in range(10)])
    backend, slept = wrap(inner, attempts=4)
    with pytest.raises(TransientStoreError, match="3"):
        await backend.get("k")
    assert inner.calls == 4
    assert len(slept) == 3


@pytest.mark.parametrize(
    "error",
    [AccessDeniedError("403"), NotFoundError("404"), IntegrityError("bad"), StoreError("400")],
)
async def test_permanent_errors_are_raised_at_once(error: ReplicatorError) -> None:
    inner = FlakyBackend([error])
    backend, slept = wrap(inner)
    with pytest.raises(type(error)):
        await backend.put("k", b"v")
    assert inner.calls == 1
    assert slept == []


async def test_retriable_is_read_from_the_class() -> None:
    class PeerRestarting(StoreError):
        retriable = True

    inner = FlakyBackend([PeerRestarting("restarting")])
    backend, _ = wrap(inner)
    assert await backend.put_if_absent("k", b"v") is True
    assert inner.calls == 2


async def test_full_jitter_backoff_is_seeded_and_capped() -> None:
    inner = FlakyBackend([TransientStoreError(str(i)) for i in range(5)])
    backend, slept = wrap(inner, attempts=6, seed=42)
    await backend.head("k")
    rng = random.Random(42)
    caps = [0.5, 1.0, 2.0, 3.0, 3.0]  # base * 2**n, capped at max_delay
    assert slept == [rng.uniform(0.0, cap) for cap in caps]
    assert all(0.0 <= s <= cap for s, cap in zip(slept, caps, strict=True))


@given(retry=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_delay_stays_within_the_cap(retry: int, seed: int) -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=5.0)
    delay = policy.delay(retry, random.Random(seed))
    assert 0.0 <= delay <= min(5.0, 0.1 * 2.0**retry)


async def test_list_resumes_after_the_last_key_yielded() -> None:
    inner = FlakyBackend([TransientStoreError("cut"), TransientStoreError("cut again")])
    inner.objects = {f"k{i:02d}": b"x" for i in range(10)}
    inner.list_fail_after = [4, 3]  # fails after k03, then after k06
    backend, slept = wrap(inner)
    keys = [info.key async for info in backend.list()]
    assert keys == sorted(inner.objects)  # no key lost, none repeated
    assert inner.calls == 3
    assert len(slept) == 2


async def test_list_gives_up_after_the_bound() -> None:
    inner = FlakyBackend([TransientStoreError(str(i)) for i in range(3)])
    inner.objects = {"a": b"", "b": b""}
    inner.list_fail_after = [0, 0, 0]
    backend, _ = wrap(inner, attempts=3)
    with pytest.raises(TransientStoreError):
        [info async for info in backend.list()]
    assert inner.calls == 3


async def test_list_does_not_retry_permanent_errors() -> None:
    inner = FlakyBackend([AccessDeniedError("403")])
    inner.objects = {"a": b""}
    inner.list_fail_after = [0]
    backend, slept = wrap(inner)
    with pytest.raises(AccessDeniedError):
        [info async for info in backend.list()]
    assert slept == []


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=2.0, max_delay=1.0)
