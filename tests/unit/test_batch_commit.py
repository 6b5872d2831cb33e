"""A batch of small objects committed as one (pipeline/lane_commits.py,
pipeline/manifests.py): manifests written straight to text must be the
bytes and names the format defines (``Manifest.to_bytes``/``version_name``
of what the per-object path builds), the segment a group commit writes from
those texts must be the one it writes from Manifests, and a backfill of
many small files must not make a task per object."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from replicator import config
from replicator._native import ChunkerParams, blake3_digest
from replicator.events import ChangeEvent, Kind
from replicator.pipeline.backfill import WAITING_MANIFESTS, run_backfill
from replicator.pipeline.identity import version_identity
from replicator.pipeline.lane_commits import _sent_of
from replicator.pipeline.manifests import CreatedTexts, fast_event_time, placed_manifest, text_of
from replicator.pipeline.small import BATCH_OBJECTS
from replicator.store.backends.fs import FsBackend
from replicator.store.format import Manifest, StoreConfig
from replicator.store.heads import head_of, manifest_head
from replicator.store.identity_text import event_time_text
from replicator.store.placed import Placed
from replicator.store.segment_store import segment_store
from tests.integration.peer_reader import segment_manifests

PARAMS = ChunkerParams(4096, 16384, 65536, 2, 7)

# Whatever a source may name: unicode, lone surrogates (non-UTF-8 file
# names), quotes, backslashes and control characters.
_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20) | st.text(
    alphabet='ab/. %+"\\\x00\udc80é', max_size=10
)
_maybe = st.none() | st.integers(0, 1 << 63)
_events = st.builds(
    ChangeEvent,
    _text,
    _text,
    _text,
    st.just(Kind.CREATED),
    st.integers(0, 4_000_000_000 * 10**9),
    st.integers(0, 1 << 40),
    _text,
    _text,
    st.text("0123456789ABCDEF", max_size=20) | _text,
    st.integers(0, 1 << 40),
    mtime_ns=_maybe,
    inode=_maybe,
    listed=st.booleans(),
)
# Chunks: (pack number, gap before it in its pack, length, stored length or None).
_chunks = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1 << 20), _maybe), max_size=6
)


def _placed(chunks: list[tuple[int, int, int, int | None]]) -> tuple[Placed, list[bytes]]:
    packs = [blake3_digest(bytes([i])) for i in range(3)]
    ends = [0, 0, 0]
    placed = Placed()
    for pack, gap, length, stored in chunks:
        zstd = stored is not None
        size = (stored % (1 << 20)) if stored is not None else length
        placed.add(
            packs[pack], ends[pack] + gap, length, size, "zstd" if zstd else "none", new=True
        )
        ends[pack] += gap + size
    return placed, [p for p in placed.packs if isinstance(p, bytes)]


@settings(max_examples=300, deadline=None)
@given(_events, _chunks, st.booleans(), st.binary(min_size=32, max_size=32))
def test_texts_are_the_bytes_and_names_of_the_manifests(
    event: ChangeEvent,
    chunks: list[tuple[int, int, int, int | None]],
    etag_is_digest: bool,
    digest: bytes,
) -> None:
    placed, names = _placed(chunks)
    digests = b"".join(blake3_digest(b"%d" % i) for i in range(len(placed)))
    # The per-object path (LaneCommits._commit): identity, then Manifest.
    ident = version_identity(event, event.size, digest, etag_is_digest=etag_is_digest)
    if event.listed:
        ident = replace(ident, observed=event.observed)
    manifest = placed_manifest(ident, digest, PARAMS, digests, placed=placed, names=names)
    etag = digest.hex() if etag_is_digest else event.etag
    observed = event.observed if event.listed else 0
    text = CreatedTexts(PARAMS).text(
        event,
        (event.size, digest, etag, observed),
        (digests, placed, 0, len(placed)),
        [n.hex() for n in names],
    )
    assert text[:4] == (event.bucket, event.key, manifest.version_name, manifest.to_bytes())
    assert Manifest.from_bytes(text[3]) == manifest
    # The head a format 3 peer records for the held check is the one a
    # reader parses from these bytes (a wrong one would skip a changed file).
    assert text[4] == head_of(*manifest_head(text[3])) == head_of(False, manifest.identity)


async def test_a_segment_from_texts_is_the_segment_from_manifests(tmp_path: Path) -> None:
    """put_texts and put_many of the same manifests write the same segment."""
    config_ = StoreConfig(PARAMS, version=3)
    ms = []
    for i in range(40):
        ident = version_identity(
            ChangeEvent("fs", "b", f"dir/k{i:03d}", Kind.CREATED, 10**18 + i, i),
            i,
            blake3_digest(b"%d" % i),
            etag_is_digest=True,
        )
        ms.append(Manifest(ident, False, blake3_digest(b"%d" % i), PARAMS))
    ms.append(ms[3])  # one version twice in the group: written once
    segments = []
    for name, put in (("texts", "put_texts"), ("manifests", "put_many")):
        backend = FsBackend(tmp_path / name, name)
        store = segment_store(backend, config_)
        items = [text_of(m) for m in ms] if put == "put_texts" else ms
        answers = await getattr(store, put)(items)
        assert answers == [True] * 40 + [False]
        assert await getattr(store, put)(items[:2]) == [False, False]  # held already
        segments.append(sorted(p.name for p in (tmp_path / name / "segments").rglob("*")))
        found = await segment_manifests(backend)
        assert sum(len(v) for v in found.values()) == 40
    print(f"segments written: {segments[0]}")
    assert segments[0] == segments[1]


def _settings(tmp_path: Path, concurrency: int = 4) -> config.Settings:
    cfg = tmp_path / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{tmp_path / "src"}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{tmp_path / "peer"}"\n\n'
        f'[store]\ncache_dir = "{tmp_path / "cache"}"\nconcurrency = {concurrency}\n'
    )
    return config.load(cfg)


async def test_a_backfill_of_small_files_makes_no_task_per_object(tmp_path: Path) -> None:
    """Tasks made by a first copy of 600 small files: per batch, not per
    object (the durable reports were a task each)."""
    files = {f"d{i % 7}/f{i:04d}": os.urandom(100 + 37 * i % 9000) for i in range(600)}
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy-clean window: every file batched
    loop = asyncio.get_running_loop()
    made = 0

    def counting(
        loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object
    ) -> asyncio.Task[object]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    before = loop.get_task_factory()
    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        summary = await run_backfill(_settings(tmp_path))
    finally:
        loop.set_task_factory(before)
    print(f"{len(files)} files: {made} tasks, {summary.packs['a']} packs")
    assert (summary.replicated, summary.errors) == (len(files), 0)
    assert made < len(files) / 2
    found = await segment_manifests(FsBackend(tmp_path / "peer", "a"))
    assert {k: len(v) for k, v in found.items()} == {k: 1 for k in files}


async def test_packs_fill_to_the_budget_when_the_listing_ends_ahead(tmp_path: Path) -> None:
    """A listing ends up to ``max_pending`` versions ahead of the lanes; what
    is still wanted then fills packs as before (one per ``waiting`` versions),
    instead of each batch sealing a pack of its own."""
    files = {f"d{i % 7}/f{i:04d}": os.urandom(100 + 37 * i % 3000) for i in range(3000)}
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy-clean window: every file batched
    # One reader: the listing is far ahead of it when it ends.
    summary = await run_backfill(_settings(tmp_path, concurrency=1))
    batches = -(-len(files) // BATCH_OBJECTS)
    print(f"{len(files)} files in {batches}+ batches: {summary.packs['a']} packs")
    assert (summary.replicated, summary.errors) == (len(files), 0)
    # One pack per WAITING_MANIFESTS versions, and the last ones (a pack per
    # batch would be about twice as many).
    assert summary.packs["a"] <= len(files) // WAITING_MANIFESTS + 3


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(0, 4_000_000_000 * 10**9)
    | st.builds(
        lambda s, f: s * 10**9 + f,
        st.integers(0, 4_000_000_000),
        st.sampled_from([0, 499, 500, 501, 1500, 2500, 999_999_499, 999_999_500, 999_999_999]),
    )
)
def test_the_fast_event_time_is_the_event_time_text(ns: int) -> None:
    """Microseconds rounded half to even, carried into the next second."""
    assert fast_event_time(ns) == event_time_text(ns)


def test_sent_bytes_of_a_batch_object_count_only_its_new_chunks() -> None:
    placed = Placed()
    for i, (n, new) in enumerate([(10, True), (20, False), (30, True), (40, True), (50, False)]):
        placed.add(b"p" * 32, i * 100, n, n, "none", new=new)
    assert _sent_of(placed, 0, 1) == (10, 10)  # one chunk, shipped
    assert _sent_of(placed, 1, 2) == (0, 20)  # one chunk, deduplicated
    assert _sent_of(placed, 1, 5) == (70, 140)
    assert _sent_of(placed, 0, 5) == (80, 150)


async def test_a_first_copy_makes_few_packs_and_segments(tmp_path: Path) -> None:
    """Every pack costs its own syncs (pack, index, their directories) and
    its manifests' group commits: a first copy of 3,000 small files fills a
    pack per ``WAITING_MANIFESTS`` (1,024) versions, not one per 256 (10
    packs and 13 segments then; 5-6 and 6-7 now)."""
    files = {f"d{i % 7}/f{i:04d}": os.urandom(100 + 37 * i % 3000) for i in range(3000)}
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy-clean window: every file batched
    summary = await run_backfill(_settings(tmp_path))
    segments = list((tmp_path / "peer" / "segments").rglob("*/*/*"))
    print(f"{len(files)} files: {summary.packs['a']} packs, {len(segments)} segments")
    assert (summary.replicated, summary.errors) == (len(files), 0)
    # 2 full packs, and the last batches in flight as the run ends may seal
    # a pack each (``finish_up``): never near 3,000 / 256.
    assert summary.packs["a"] <= len(files) // 1024 + 5
    found = await segment_manifests(FsBackend(tmp_path / "peer", "a"))
    assert {k: len(v) for k, v in found.items()} == {k: 1 for k in files}
