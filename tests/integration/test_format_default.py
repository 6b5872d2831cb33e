"""Which store format a peer gets: a peer created with default settings is
format 3 (segments, no manifests/ objects); a peer created as format 2
(``store.format_version = 2``) stays format 2 under the default afterwards,
and each is read back whole by the independent reader (peer_reader)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import pytest

from replicator.config import StoreSettings
from replicator.pipeline.backfill import run_backfill
from replicator.store.backends import FsBackend
from replicator.store.format import MANIFESTS
from tests.integration.peer_reader import SEGMENTS, manifests_by_key
from tests.integration.test_backfill import MIB, check_structure, settings_for, write_tree

pytestmark = pytest.mark.integration


def test_the_default_format_of_a_new_peer_is_3() -> None:
    assert StoreSettings().format_version == 3


def _store_version(peer: Path) -> int:
    return int(json.loads((peer / "config").read_bytes())["version"])


async def _names(peer: Path, prefix: str) -> int:
    return len([i async for i in FsBackend(peer, peer.name).list(prefix)])


@pytest.mark.parametrize("created_as", [None, 2])
async def test_a_peer_keeps_the_format_it_was_created_with(
    tmp_path: Path, created_as: Literal[2] | None
) -> None:
    tree = {f"d{i % 3}/f{i}": os.urandom(1_000 + 37 * i) for i in range(30)}
    write_tree(tmp_path / "src", tree)
    settings = settings_for(tmp_path, peers=1)
    if created_as is not None:
        store = settings.store.model_copy(update={"format_version": created_as})
        settings = settings.model_copy(update={"store": store})
    first = await run_backfill(settings)
    assert (first.replicated, first.errors) == (len(tree), 0)

    # Later runs use the default (3): the peer's own format decides.
    changed = {"d0/new": os.urandom(5 * MIB // 4), "d1/f1": b"changed"}
    write_tree(tmp_path / "src", changed)
    tree |= changed
    again = await run_backfill(settings_for(tmp_path, peers=1))
    assert (again.manifests, again.errors) == ({"peer0": 2}, 0)

    peer = tmp_path / "peer0"
    expected = created_as or 3
    assert _store_version(peer) == expected
    manifests, segments = await _names(peer, MANIFESTS), await _names(peer, SEGMENTS)
    if expected == 3:
        assert manifests == 0 and 1 <= segments <= 4, (manifests, segments)
    else:
        assert segments == 0 and manifests == len(tree) + 1, (manifests, segments)
    backend = FsBackend(peer, "peer0")
    assert await check_structure(backend) == tree
    versions = await manifests_by_key(backend)
    assert len(versions["d1/f1"]) == 2 and versions["d1/f1"][-1].identity.size == len(b"changed")
    print(f"created as format {expected}: {manifests} manifest objects, {segments} segments")
