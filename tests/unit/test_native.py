"""replicator._native against references: the official BLAKE3 vectors, the
fastcdc crate's own expectations, the independent ``pyfastcdc`` package, and
the API's edge cases (inputs, parameters, errors)."""

from __future__ import annotations

import array
import json
import mmap
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replicator import _native as native
from replicator._native import ChunkerParams, ChunkList
from replicator.chunking import chunks_of

#: The official vectors, checked in (tests/data/blake3/README.md says whence).
VECTORS = Path(__file__).parents[1] / "data" / "blake3" / "test_vectors.json"
SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
PARAM_SETS = [
    ChunkerParams(),
    SMALL,
    ChunkerParams(min_size=64, avg_size=256, max_size=1024, normalization=0),
    ChunkerParams(min_size=4096, avg_size=16384, max_size=65534, normalization=3, seed=666),
    ChunkerParams(min_size=2048, avg_size=8192, max_size=32768, normalization=2),
]


def lengths(cl: ChunkList) -> list[int]:
    return list(memoryview(cl.lengths).cast("I"))


def vector_input(n: int) -> bytes:
    """The BLAKE3 vectors' input: the repeating pattern 0, 1, ..., 250."""
    return bytes(i % 251 for i in range(n))


def load_vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
    return cases


def test_official_blake3_vectors() -> None:
    cases = load_vectors()
    assert len(cases) >= 20  # 0 .. 102400 bytes: every tree shape up to 100 chunks
    for case in cases:
        data = vector_input(case["input_len"])
        want = bytes.fromhex(case["hash"])[:32]
        assert native.blake3_digest(data) == want, case["input_len"]
        assert native.blake3_digest(data, threads=2) == want
        for params in (ChunkerParams(), SMALL):
            cl = native.chunk_buffer(data, params)
            assert cl.digest == want, case["input_len"]
            assert cl.total_length == len(data)
            for chunk in chunks_of(cl):
                piece = data[chunk.offset : chunk.offset + chunk.length]
                assert chunk.digest == native.blake3_digest(piece)


def test_fastcdc_crate_expectations() -> None:
    # fastcdc-rs v2020 test_cut_all_zeros / test_odd_tail_hash_not_stale /
    # test_size_hint_short_tail: zeros never match a mask, so every chunk is
    # max_size and the tail is what is left.
    assert lengths(native.chunk_buffer(bytes(10240), SMALL)) == [1024] * 10
    assert lengths(native.chunk_buffer(bytes(1024 + 65), SMALL)) == [1024, 65]
    assert lengths(native.chunk_buffer(bytes(50), SMALL)) == [50]


def pyfastcdc_lengths(data: bytes, p: ChunkerParams) -> list[int]:
    pyfastcdc = pytest.importorskip("pyfastcdc")
    cdc = pyfastcdc.FastCDC(
        p.avg_size,
        min_size=p.min_size,
        max_size=p.max_size,
        normalized_chunking=p.normalization,
        seed=p.seed,
    )
    return [c.length for c in cdc.cut_buf(data)]


@pytest.mark.parametrize("params", PARAM_SETS, ids=repr)
def test_cut_points_equal_pyfastcdc(params: ChunkerParams) -> None:
    for data in (random.Random(7).randbytes(3 << 20), vector_input(1 << 20)):
        ours = lengths(native.chunk_buffer(data, params))
        assert ours == pyfastcdc_lengths(data, params)
        assert lengths_of_cut_only(data, params) == ours


def lengths_of_cut_only(data: bytes, params: ChunkerParams) -> list[int]:
    return list(memoryview(native.cut_only(data, params)).cast("I"))


def test_small_inputs() -> None:
    empty = native.chunk_buffer(b"")
    assert (len(empty), empty.total_length, empty.digest) == (0, 0, native.blake3_digest(b""))
    assert empty.offsets == empty.lengths == empty.digests == b""
    short = native.chunk_buffer(b"x" * 100, SMALL)
    assert [(c.offset, c.length) for c in chunks_of(short)] == [(0, 100)]
    assert short[0] == (0, 100, native.blake3_digest(b"x" * 100))
    assert short[-1] == short[0]
    with pytest.raises(IndexError):
        short[1]
    assert lengths(native.chunk_buffer(bytes(1024), SMALL)) == [1024]
    assert lengths(native.chunk_buffer(bytes(1025), SMALL)) == [1024, 1]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_size": 32}, "min_size"),
        ({"min_size": 65}, "min_size"),
        ({"avg_size": 128}, "avg_size"),
        ({"avg_size": 65535}, "avg_size"),
        ({"max_size": 1 << 25}, "max_size"),
        ({"max_size": 262143}, "max_size"),
        ({"normalization": 4}, "normalization"),
        ({"min_size": 65536, "avg_size": 32768}, "min_size"),
        ({"avg_size": 262144, "max_size": 131072}, "avg_size"),
    ],
)
def test_invalid_params_name_the_parameter(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ChunkerParams(**kwargs)


def test_negative_params_are_refused() -> None:
    with pytest.raises(OverflowError):
        ChunkerParams(min_size=-2)


def test_params_are_values() -> None:
    p = ChunkerParams(min_size=64, avg_size=256, max_size=1024, normalization=2, seed=9)
    assert (p.min_size, p.avg_size, p.max_size, p.normalization, p.seed) == (64, 256, 1024, 2, 9)
    assert p == ChunkerParams(64, 256, 1024, 2, 9)
    assert p != ChunkerParams(64, 256, 1024, 2, 8)
    assert "normalization=2" in repr(p)


def test_threads_zero_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    calls: list[Callable[[], object]] = [
        lambda: native.chunk_buffer(b"abc", threads=0),
        lambda: native.chunk_file(tmp_path / "f", threads=0),
        lambda: native.StreamChunker(threads=0),
        lambda: native.blake3_digest(b"abc", threads=0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="threads"):
            call()


def test_buffer_kinds_are_accepted(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(50_000)
    want = native.chunk_buffer(data, SMALL)
    path = tmp_path / "data"
    path.write_bytes(data)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        kinds: list[Any] = [bytearray(data), memoryview(data), mm, array.array("B", data)]
        kinds.append(memoryview(bytearray(data)).cast("B", (len(data) // 4, 4)))
        for kind in kinds:
            got = native.chunk_buffer(kind, SMALL)
            assert (got.digests, got.lengths) == (want.digests, want.lengths)
            assert got.digest == want.digest
            assert native.blake3_digest(kind) == want.digest


def test_strided_buffer_is_refused() -> None:
    data = memoryview(bytes(10_000))[::2]
    for call in (native.chunk_buffer, native.blake3_digest, native.cut_only):
        with pytest.raises(BufferError):
            call(data)
    with pytest.raises(BufferError):
        native.StreamChunker().feed(data)


def test_not_a_buffer_is_refused() -> None:
    with pytest.raises(TypeError):
        native.chunk_buffer("text")  # type: ignore[arg-type]


def test_whole_digest_off() -> None:
    data = random.Random(4).randbytes(10_000)
    cl = native.chunk_buffer(data, SMALL, whole_digest=False)
    assert cl.digest is None
    assert cl.digests == native.chunk_buffer(data, SMALL).digests


def test_chunk_list_arrays_are_consistent() -> None:
    data = random.Random(5).randbytes(200_000)
    cl = native.chunk_buffer(data, SMALL)
    offsets = list(memoryview(cl.offsets).cast("Q"))
    sizes = lengths(cl)
    assert offsets[0] == 0
    assert all(a + n == b for a, n, b in zip(offsets, sizes, offsets[1:], strict=False))
    assert sum(sizes) == cl.total_length == len(data)
    assert len(cl.digests) == 32 * len(cl)
    assert all(64 <= n <= 1024 for n in sizes[:-1])
    assert repr(cl) == f"<ChunkList chunks={len(cl)} bytes={len(data)}>"
