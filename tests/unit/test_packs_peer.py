"""Opening peers: the store config is created once, then pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import ChunkingSettings, FsDestinationSettings, FsSourceSettings, Settings
from replicator.errors import IncompatibleStoreError
from replicator.store.format import CONFIG_KEY, StoreConfig
from replicator.store.peer import open_peer, open_peers, peer_identity, store_config

SMALL = ChunkingSettings(min_size=4096, avg_size=16384, max_size=65536)


async def test_open_creates_config_then_refuses_other_parameters(tmp_path: Path) -> None:
    dest = FsDestinationSettings(name="dr-1", path=tmp_path / "peer")
    wanted = StoreConfig(SMALL.params())
    with pytest.raises(IncompatibleStoreError, match=r"'dr-1'.*not a replicator store"):
        await open_peer(dest, wanted, create=False)
    assert not (tmp_path / "peer" / CONFIG_KEY).exists(), "reading never creates"

    peer = await open_peer(dest, wanted, create=True)
    assert (peer.name, peer.config) == ("dr-1", wanted)
    assert (tmp_path / "peer" / CONFIG_KEY).read_bytes() == wanted.to_bytes()
    await peer.close()

    again = await open_peer(dest, wanted, create=False)
    assert again.config == wanted
    await again.close()

    other = StoreConfig(ChunkingSettings().params())
    with pytest.raises(IncompatibleStoreError, match="'dr-1' was written with chunker"):
        await open_peer(dest, other, create=True)
    assert (tmp_path / "peer" / CONFIG_KEY).read_bytes() == wanted.to_bytes(), "never replaced"


async def test_open_refuses_a_damaged_config_naming_the_peer(tmp_path: Path) -> None:
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / CONFIG_KEY).write_bytes(b'{"format": "restic", "version": 2}')
    dest = FsDestinationSettings(name="old", path=tmp_path / "peer")
    with pytest.raises(IncompatibleStoreError, match="'old'"):
        await open_peer(dest, StoreConfig(SMALL.params()), create=True)


async def test_open_peers_fails_on_any_mismatch_naming_it(tmp_path: Path) -> None:
    settings = Settings(
        source=FsSourceSettings(path=tmp_path / "src"),
        destinations=[
            FsDestinationSettings(name="good", path=tmp_path / "good"),
            FsDestinationSettings(name="bad", path=tmp_path / "bad"),
        ],
        chunking=SMALL,
    )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_KEY).write_bytes(StoreConfig(ChunkingSettings().params()).to_bytes())
    with pytest.raises(IncompatibleStoreError, match="'bad'"):
        await open_peers(settings, create=True)
    (tmp_path / "bad" / CONFIG_KEY).unlink()
    peers = await open_peers(settings, create=True)
    assert [p.name for p in peers] == ["good", "bad"]
    created = StoreConfig(SMALL.params(), version=3)  # new peers get format 3 by default
    assert all(p.config == created for p in peers)
    for p in peers:
        await p.close()
    assert store_config(settings) == created
    assert len({peer_identity(d) for d in settings.destinations}) == 2
