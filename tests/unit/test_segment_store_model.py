"""The format 3 store against a model: random group commits (repeats and
replays included), compactions and a second store over the same peer; every
listing must equal the model's, in the version-2 listing order."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams, blake3_digest
from replicator.store.backends import FsBackend
from replicator.store.format import ChunkRef, Manifest, PackRun, SourceIdentity, StoreConfig
from replicator.store.segment_compact import compact
from replicator.store.segment_store import segment_store

PARAMS = ChunkerParams(256, 1024, 4096)
V3 = StoreConfig(PARAMS, version=3)
KEYS = ["a", "a b", "a/b", "b", "x" * 200, "x" * 200 + "y", "é", ".h"]


def manifest(key: str, t: int) -> Manifest:
    ident = SourceIdentity("src", "bkt", key, "", "", 3, t)
    run = PackRun(b"\x01" * 32, 0, (ChunkRef(blake3_digest(b"abc"), 3, 3),))
    return Manifest(ident, False, blake3_digest(b"abc"), PARAMS, (run,))


BATCHES = st.lists(
    st.lists(st.tuples(st.sampled_from(KEYS), st.integers(1, 4)), min_size=1, max_size=6),
    min_size=1,
    max_size=8,
)


@given(batches=BATCHES, compact_after=st.integers(0, 8), fresh_reader=st.booleans())
def test_listings_match_a_model(
    batches: list[list[tuple[str, int]]], compact_after: int, fresh_reader: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), batches, compact_after, fresh_reader))


async def _run(
    tmp: Path, batches: list[list[tuple[str, int]]], compact_after: int, fresh_reader: bool
) -> None:
    store = segment_store(FsBackend(tmp, "p"), V3)
    model: dict[tuple[str, int], Manifest] = {}
    for n, batch in enumerate(batches):
        ms = [manifest(k, t) for k, t in batch]
        answers = await store.put_many(ms)
        for m, answer in zip(ms, answers, strict=True):
            new = (m.identity.key, m.identity.event_time_ns) not in model
            assert answer is new, (m.identity.key, answer)
            model.setdefault((m.identity.key, m.identity.event_time_ns), m)
        if n + 1 == compact_after:
            await compact(store, "bkt", at_least=2)
    reader = segment_store(FsBackend(tmp, "p"), V3) if fresh_reader else store
    expected = sorted(model.values(), key=lambda m: m.store_key())
    listed = [e async for e in reader.entries("bkt")]
    assert [(e.key, e.version_name) for e in listed] == [
        (m.identity.key, m.version_name) for m in expected
    ]
    assert [await reader.read(e) for e in listed] == [m.to_bytes() for m in expected]
    latest = {k: e.event_time_ns async for k, e in reader.latest("bkt")}
    assert latest == {k: max(t for kk, t in model if kk == k) for k, _ in model}
