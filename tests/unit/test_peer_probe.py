"""The start-up capability probe: a peer opened for writing must refuse a
second conditional write, or opening it fails (exit code 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replicator._native import ChunkerParams
from replicator.errors import CapabilityError
from replicator.store.backend import Payload
from replicator.store.backends import FsBackend
from replicator.store.format import StoreConfig
from replicator.store.peer import peer_on

WANTED = StoreConfig(chunker=ChunkerParams())


class NoConditionalWrites(FsBackend):
    """A filesystem peer that, like some S3 servers, ignores If-None-Match."""

    def _write(self, path: Path, data: Payload, sha256: bytes | None, exclusive: bool) -> bool:
        return super()._write(path, data, sha256, False)


async def test_writer_needs_conditional_writes(tmp_path: Path) -> None:
    backend = NoConditionalWrites(tmp_path, "lax")
    with pytest.raises(CapabilityError, match=r"'lax'.*conditional write") as err:
        await peer_on("lax", backend, WANTED, "test:lax", create=True)
    assert err.value.exit_code == 2


async def test_reader_is_not_probed_and_writer_records_capabilities(tmp_path: Path) -> None:
    writer = await peer_on("ok", FsBackend(tmp_path, "ok"), WANTED, "test:ok", create=True)
    assert writer.capabilities is not None and writer.capabilities.put_if_absent
    assert writer.capabilities.verifies_checksums
    reader = await peer_on("ok", FsBackend(tmp_path, "ok"), WANTED, "test:ok", create=False)
    assert reader.capabilities is None
    # The probe leaves nothing behind: only the store config exists.
    assert sorted(os.listdir(tmp_path)) == ["config"]
