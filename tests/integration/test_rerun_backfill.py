"""Re-runs through the backfill: an unchanged tree reads nothing and writes
nothing on either layout, and removals come out the same whether the listed
keys fit in memory or the listing is spilled and merged (``LISTED_IN_MEMORY``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from replicator.pipeline.backfill import run_backfill
from replicator.sources import listing
from replicator.store.peer import close_peers, open_peers
from tests.integration.peer_reader import manifests_by_key
from tests.integration.test_backfill import settings_for, write_tree

pytestmark = pytest.mark.integration

FILES = {
    f"d{i % 3}/f{i:02d} {'é' if i % 4 == 0 else ''}": bytes([i]) * (100 + i) for i in range(24)
}


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("limit", [listing.LISTED_IN_MEMORY, 5])
async def test_rerun_and_removals_with_keys_in_memory_or_spilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: Literal[2, 3], limit: int
) -> None:
    monkeypatch.setattr(listing, "LISTED_IN_MEMORY", limit)
    settings = settings_for(tmp_path, peers=2, format_version=fmt)
    write_tree(tmp_path / "src", FILES)
    first = await run_backfill(settings)
    assert (first.replicated, first.errors) == (len(FILES), 0)
    again = await run_backfill(settings)
    assert (again.unchanged, again.replicated, again.removed) == (len(FILES), 0, 0)
    assert sum(again.put_requests.values()) == 0
    gone = sorted(FILES)[::5]
    for key in gone:
        (tmp_path / "src" / key).unlink()
    removed = await run_backfill(settings)
    print(f"format {fmt}, {limit} keys in memory: {removed.removed} tombstones for {len(gone)}")
    assert (removed.removed, removed.unchanged, removed.errors) == (
        2 * len(gone),
        len(FILES) - len(gone),
        0,
    )
    peers = await open_peers(settings, create=False)
    try:
        for peer in peers:
            by_key = await manifests_by_key(peer.backend)
            assert {k for k, ms in by_key.items() if ms[-1].removed} == set(gone)
    finally:
        await close_peers(peers)
    replay = await run_backfill(settings)
    assert (replay.removed, sum(replay.put_requests.values())) == (0, 0)
