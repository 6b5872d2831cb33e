"""``replicator._native.Blake3Hasher``: incremental BLAKE3 for restore and
verify, against official vector values (no hashlib involved), any split of
the input, every buffer type, and the buffer rules (strided -> BufferError)."""

from __future__ import annotations

import array
import json
import mmap
import random
import threading
from pathlib import Path

import pytest

from replicator._native import Blake3Hasher, blake3_digest

#: From BLAKE3's official test_vectors.json (first 32 bytes of each "hash";
#: the input is the repeating pattern 0, 1, ..., 250).
OFFICIAL = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    102400: "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085",
}
#: The full vector file, once checked in (tests/data/blake3); used when present.
VECTOR_FILE = Path(__file__).parents[1] / "data" / "blake3" / "test_vectors.json"


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def pieces(data: bytes, rng: random.Random, most: int) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        n = rng.randint(0, most)
        out.append(data[at : at + n])
        at += n
    return out


def test_official_values_fed_in_random_pieces() -> None:
    cases = dict(OFFICIAL)
    if VECTOR_FILE.exists():
        for case in json.loads(VECTOR_FILE.read_text())["cases"]:
            cases[case["input_len"]] = case["hash"][:64]
    rng = random.Random(1)
    for n, want in cases.items():
        data = pattern(n)
        for most in (1, 7, 1024, 5000):
            h = Blake3Hasher()
            for piece in pieces(data, rng, most):
                h.update(piece)
            assert h.hexdigest() == want, (n, most)
            assert h.digest() == bytes.fromhex(want) and h.count == n
    print(f"{len(cases)} official BLAKE3 values, each fed in 4 random splittings")


def test_large_input_with_threads_and_every_buffer_type(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(3 << 20)
    want = blake3_digest(data)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        buffers: list[object] = [data, bytearray(data), memoryview(data), m]
        buffers.append(array.array("Q", data))
        for buf in buffers:
            for threads in (1, 2, 4):
                h = Blake3Hasher(threads=threads)
                h.update(buf)  # type: ignore[arg-type]
                assert h.digest() == want, (type(buf), threads)
        assert Blake3Hasher(m).digest() == want
        assert Blake3Hasher(memoryview(data).cast("B", (1024, 3072))).digest() == want


def test_digest_is_a_snapshot_and_copy_is_independent() -> None:
    h = Blake3Hasher(b"ab")
    mid = h.copy()
    assert h.digest() == blake3_digest(b"ab")
    h.update(b"c")
    assert h.digest() == blake3_digest(b"abc") and mid.digest() == blake3_digest(b"ab")
    assert (h.digest_size, h.name) == (32, "blake3")


def test_strided_and_bad_inputs_are_refused() -> None:
    data = bytes(range(256)) * 64
    with pytest.raises(BufferError):
        Blake3Hasher().update(memoryview(data)[::2])
    with pytest.raises(TypeError):
        Blake3Hasher().update("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        Blake3Hasher(threads=0)


def test_hashers_in_threads_at_once_stay_correct() -> None:
    # update releases the GIL on large pieces: four threads hash at once.
    datas = [random.Random(i).randbytes(1 << 20) for i in range(4)]
    got: dict[int, bytes] = {}

    def run(i: int) -> None:
        h = Blake3Hasher()
        for j in range(0, len(datas[i]), 64 << 10):
            h.update(datas[i][j : j + (64 << 10)])
        got[i] = h.digest()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert got == {i: blake3_digest(d) for i, d in enumerate(datas)}
