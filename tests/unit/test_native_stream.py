"""Streaming and multi-threaded chunking give exactly the one-shot, serial
answer: for any split of the input into pieces, and for any thread count,
including inputs built to defeat the parallel merge's resync."""

from __future__ import annotations

import functools
import itertools
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator import _native as native
from replicator._native import ChunkerParams, ChunkList

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
MIB = 1 << 20
# fused.rs MIN_SEGMENT: below 4 MiB per thread the parallel path stays serial.
MIN_SEGMENT = 4 * MIB


def summary(cl: ChunkList) -> tuple[bytes, bytes, bytes, bytes | None]:
    return cl.offsets, cl.lengths, cl.digests, cl.digest


def streamed(
    data: bytes, cuts: Sequence[int], params: ChunkerParams, threads: int = 1
) -> ChunkList:
    """Feeds ``data`` split at ``cuts``; returns the finish() list, checking
    that the fed batches and the final one join into a contiguous cover."""
    sc = native.StreamChunker(params, threads=threads)
    offsets, lengths, digests = bytearray(), bytearray(), bytearray()
    bounds = [0, *sorted(cuts), len(data)]
    for a, b in itertools.pairwise(bounds):
        got = sc.feed(memoryview(data)[a:b])
        assert got.digest is None
        offsets += got.offsets
        lengths += got.lengths
        digests += got.digests
        assert sc.position == b
    tail = sc.finish()
    assert (bytes(offsets + tail.offsets), bytes(lengths + tail.lengths)) == (
        native.chunk_buffer(data, params).offsets,
        native.chunk_buffer(data, params).lengths,
    )
    assert bytes(digests + tail.digests) == native.chunk_buffer(data, params).digests
    return tail


# Bytes with long zero runs as well as noise: runs exercise max-size cuts.
runs = st.lists(
    st.one_of(st.binary(max_size=3000), st.integers(0, 5000).map(bytes)), max_size=8
).map(b"".join)


@given(data=runs, cuts=st.lists(st.integers(0, 40_000), max_size=12))
def test_stream_equals_one_shot(data: bytes, cuts: list[int]) -> None:
    cuts = [c % (len(data) + 1) for c in cuts]
    tail = streamed(data, cuts, SMALL)
    assert tail.digest == native.blake3_digest(data)


@given(data=st.binary(min_size=1, max_size=3000), step=st.integers(1, 7))
def test_stream_tiny_pieces(data: bytes, step: int) -> None:
    streamed(data, range(step, len(data), step), SMALL)


def test_stream_default_params_one_byte_then_large() -> None:
    data = random.Random(9).randbytes(3 * MIB + 11)
    cuts = [*range(1, 2000), 262144, 262145, 2 * MIB]
    assert streamed(data, cuts, ChunkerParams()).digest == native.blake3_digest(data)


def test_feed_after_finish_is_refused() -> None:
    sc = native.StreamChunker(SMALL)
    sc.feed(b"abc")
    last = sc.finish()
    assert last.total_length == 3
    with pytest.raises(RuntimeError):
        sc.feed(b"more")
    with pytest.raises(RuntimeError):
        sc.finish()


def test_stream_without_whole_digest() -> None:
    sc = native.StreamChunker(SMALL, whole_digest=False)
    sc.feed(bytes(5000))
    assert sc.finish().digest is None


@functools.cache
def adversarial(size: int) -> dict[str, bytes]:
    """Inputs whose segment chains start out of phase with the true chain."""
    rng = random.Random(10)
    noise = rng.randbytes(size)
    zero_run = bytearray(noise)
    zero_run[MIN_SEGMENT - 12345 : 3 * MIN_SEGMENT + 777] = bytes(2 * MIN_SEGMENT + 13122)
    many_runs = bytearray(noise)
    pos = 1001
    while pos < size:
        n = rng.randrange(MIB, 3 * MIB)
        many_runs[pos : pos + n] = bytes(len(many_runs[pos : pos + n]))
        pos += n + rng.randrange(1, 300_000)
    cases = {
        "random": noise,
        "zeros": bytes(size),
        "zeros-after-odd-prefix": b"\x01" * 4097 + bytes(size - 4097),
        "zero-run-across-segments": bytes(zero_run),
        "many-zero-runs": bytes(many_runs),
        "vector-pattern": bytes(i % 251 for i in range(251)) * (size // 251),
    }
    assert sorted(cases) == sorted(ADVERSARIAL)
    return cases


ADVERSARIAL = [
    "random",
    "zeros",
    "zeros-after-odd-prefix",
    "zero-run-across-segments",
    "many-zero-runs",
    "vector-pattern",
]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_parallel_equals_serial(name: str) -> None:
    data = adversarial(4 * MIN_SEGMENT + 4321)[name]
    for params in (ChunkerParams(), ChunkerParams(2048, 8192, 32768, normalization=2)):
        want = summary(native.chunk_buffer(data, params))
        for threads in (2, 3, 4):
            got = native.chunk_buffer(data, params, threads=threads)
            assert summary(got) == want, (name, threads)
        assert summary(native.chunk_buffer(data, params, threads=3, whole_digest=False)) == (
            *want[:3],
            None,
        )


def test_parallel_stream_equals_serial() -> None:
    data = adversarial(3 * MIN_SEGMENT + 99)["zero-run-across-segments"]
    want = native.chunk_buffer(data)
    tail = streamed(data, [5 * MIB + 3, 9 * MIB], ChunkerParams(), threads=3)
    assert tail.digest == want.digest


def test_gil_is_released_during_native_work() -> None:
    """While one thread is inside ``feed`` (GIL released, the chunker
    mutably borrowed), another thread runs Python and sees the borrow. With
    the GIL held that observation is impossible, not merely unlikely."""
    data = bytes(128 * MIB)
    observed = False
    for _ in range(3):
        sc = native.StreamChunker(threads=1)
        worker = threading.Thread(target=sc.feed, args=(data,))
        worker.start()
        while worker.is_alive() and not observed:
            try:
                sc.position  # noqa: B018 - the borrow is what is probed
            except RuntimeError:
                observed = True
        worker.join()
        if observed:
            break
    assert observed


def test_concurrent_hashing_threads_agree() -> None:
    data = random.Random(12).randbytes(16 * MIB)
    want = summary(native.chunk_buffer(data))
    results: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    lock = threading.Lock()

    def work(threads: int) -> None:
        got = summary(native.chunk_buffer(data, threads=threads))
        with lock:
            results.append(got)

    workers = [threading.Thread(target=work, args=(t,)) for t in (1, 2, 1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert not w.is_alive(), "a hashing thread did not finish (deadlock?)"
    assert results == [want] * 4


def test_huge_thread_counts_are_capped_not_spawned() -> None:
    """Pools are capped at the CPU count; the answer is still the serial one."""
    tasks = Path("/proc/self/task")
    if not tasks.exists():
        pytest.skip("needs /proc to count this process's threads")
    data = adversarial(4 * MIN_SEGMENT + 4321)["random"]
    before = len(list(tasks.iterdir()))
    got = native.chunk_buffer(data, threads=10_000)
    assert summary(got) == summary(native.chunk_buffer(data))
    assert native.blake3_digest(data, threads=10_000) == got.digest
    assert len(list(tasks.iterdir())) <= before + (os.cpu_count() or 1)
