"""The warm held check and a segment damaged after the header table recorded it.

A re-run answers "held" from the writer's header table (store/segment_cache.py)
without reading any segment. A segment cut short after it was recorded
would still count as held there, so no run would write its versions again
while no reader can read them. The reconcile compares each known segment's
listed size with the recorded one (store/segment_sync.py ``_resized``): the
re-run finds the versions not held and writes them again; the run after it
copies nothing, on a filesystem peer and on S3 servers (the sizes come
with every backend's listing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.commands.backfill import backfill
from replicator.config import Settings
from replicator.pipeline.backfill import run_backfill
from replicator.store.peer import close_peers, open_peers
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import run_cli, write_config
from tests.integration.test_backfill import settings_for, write_tree
from tests.integration.test_format3 import segment_names

pytestmark = pytest.mark.integration

FILES = {f"d{i % 2}/f{i:02d}": bytes([i]) * (300 + i) for i in range(12)}


async def _readable_keys(settings: Settings) -> set[str]:
    """The keys whose newest manifest reads (checked against its entry's
    BLAKE3) through the peer's own store."""
    peers = await open_peers(settings, create=False)
    try:
        [peer] = peers
        out = set()
        async for key, entry in peer.manifests.latest(settings.source.bucket):
            assert await peer.manifests.read(entry)
            out.add(key)
        return out
    finally:
        await close_peers(peers)


async def test_a_segment_cut_short_after_it_was_recorded_is_written_again(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, peers=1)
    write_tree(tmp_path / "src", FILES)
    first = await run_backfill(settings)
    assert (first.replicated, first.errors) == (len(FILES), 0)
    segments = [p for p in (tmp_path / "peer0" / "segments").rglob("*") if p.is_file()]
    assert segments
    for path in segments:  # damaged after the writer's table recorded them
        data = path.read_bytes()
        path.write_bytes(data[:-7])
    again = await run_backfill(settings)
    print(
        f"{len(segments)} segments cut short: re-run replicated {again.replicated}, "
        f"unchanged {again.unchanged}, errors {again.errors}"
    )
    # Before the guard: 0 replicated, every version "held" in unreadable segments.
    assert (again.replicated, again.unchanged) == (len(FILES), 0)
    settled = await run_backfill(settings)
    assert (settled.unchanged, settled.replicated) == (len(FILES), 0)
    assert sum(settled.put_requests.values()) == 0
    assert await _readable_keys(settings) == set(FILES)


async def test_the_guard_on_every_backend(store: StoreUnderTest, tmp_path: Path) -> None:
    write_tree(tmp_path / "src", FILES)
    config = write_config(
        tmp_path / "replicator.toml", store, source=tmp_path / "src", format_version=3
    )
    # The writer's header table, kept between runs.
    config.write_text(config.read_text() + f'cache_dir = "{tmp_path / "cache"}"\n')
    args = ["--config", str(config), "--json"]
    assert (await run_cli(backfill, args, store)).json()["replicated"] == len(FILES)
    for name in await segment_names(store.backend):
        data = await store.backend.get(name)
        await store.backend.put(name, data + b"written over")
    again = (await run_cli(backfill, args, store)).json()
    print(f"{store.kind}: re-run replicated {again['replicated']}, errors {again['errors']}")
    assert (again["replicated"], again["unchanged"]) == (len(FILES), 0)
    settled = (await run_cli(backfill, args, store)).json()
    assert (settled["replicated"], settled["unchanged"]) == (0, len(FILES))
