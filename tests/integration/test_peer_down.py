"""A peer that dies during a backfill is marked down; the others carry on.

The sick peer is a real S3 server (a private moto server) stopped part-way
through the run; the healthy peer is a directory store. Afterwards the
healthy peer holds every object, the summary names the dead peer and why,
and the run reports an error (exit 1) instead of stalling or losing it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from replicator.commands.backfill import _human
from replicator.config import (
    FsDestinationSettings,
    FsSourceSettings,
    S3DestinationSettings,
    Settings,
    StoreSettings,
)
from replicator.memory import peak_rss_bytes
from replicator.pipeline.backfill import run_backfill
from replicator.store.backends import FsBackend
from tests.integration.test_backfill import CHUNKING, MIB, check_structure, write_tree
from tests.services.moto_server import MotoServer
from tests.services.process import ServiceError

FILES = 40
KILL_AFTER = 5


class KillAfter:
    """Progress hook: stops the sick peer's server after a few objects."""

    def __init__(self, server: MotoServer, after: int) -> None:
        self.server, self.after, self.done_objects = server, after, 0
        self.killed_at: float | None = None

    def listed(self, objects: int, size: int) -> None:
        return None

    def done(self, outcome: str, size: int) -> None:
        self.done_objects += 1
        if self.done_objects == self.after:
            self.server.stop()
            self.killed_at = time.monotonic()


async def test_a_peer_dying_mid_run_is_marked_down_and_the_others_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "moto").mkdir()
    try:
        server = MotoServer(tmp_path / "moto")
    except ServiceError as exc:
        pytest.skip(str(exc))
    ep = server.endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ep.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ep.secret_access_key)
    ep.client().create_bucket(Bucket="sick")
    files = {f"shard-{i:03d}": os.urandom(300_000) for i in range(FILES)}
    write_tree(tmp_path / "src", files)
    settings = Settings(
        source=FsSourceSettings(path=tmp_path / "src"),
        destinations=[
            FsDestinationSettings(name="good", path=tmp_path / "good"),
            S3DestinationSettings(
                name="sick",
                type="s3",
                bucket="sick",
                endpoint_url=ep.url,
                region=ep.region,
                addressing_style="path",
            ),
        ],
        chunking=CHUNKING,
        store=StoreSettings(pack_size=MIB, cache_dir=tmp_path / "cache", concurrency=2),
    )
    hook = KillAfter(server, KILL_AFTER)
    started = time.monotonic()
    try:
        summary = await run_backfill(settings, progress=hook)
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    assert hook.killed_at is not None
    assert list(summary.down) == ["sick"], summary.error_samples
    assert summary.errors >= 1 and any("'sick' is down" in e for e in summary.error_samples)
    # Once 'sick' is down the rest are not sent (not each tried and failed
    # after its retries). How many others were under way while its retries
    # ran out depends on the machine's load, not on the code: 33 not sent on
    # a quiet machine, 30 in 1 of 40 quiet runs, 26 in a CI run beside a Go
    # build. Most of them must still be skipped.
    assert summary.not_sent["sick"] >= (FILES - KILL_AFTER) // 2
    assert summary.removed == 0
    assert await check_structure(FsBackend(tmp_path / "good", "good")) == files
    text = _human(summary)
    assert "sick: DOWN" in text
    print(
        f"sick peer killed after {KILL_AFTER} of {FILES} objects: run ended "
        f"{time.monotonic() - hook.killed_at:.1f} s later ({elapsed:.1f} s in all), "
        f"good peer complete, {summary.not_sent['sick']} objects not sent to 'sick'; "
        f"test process peak RSS {peak_rss_bytes() / 2**20:.0f} MiB; "
        f"reason: {summary.down['sick']}"
    )
