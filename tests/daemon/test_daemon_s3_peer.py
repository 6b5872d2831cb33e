"""`replicator run` with one directory peer and one S3 peer (a real moto
server): writes, a rewrite that shares most bytes, and a removal reach both,
and the S3 peer's manifests name only stored packs."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.config import S3DestinationSettings
from replicator.store.peer import make_backend
from tests.daemon.harness import (
    Daemon,
    log_events,
    peer_state,
    source_state,
    wait_until,
    write_config,
)
from tests.integration.test_backfill import check_structure
from tests.services.moto_server import MotoServer
from tests.services.process import ServiceError


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    try:
        server = MotoServer(tmp_path_factory.mktemp("moto"))
    except ServiceError as exc:
        if os.environ.get("REPLICATOR_REQUIRE_SERVICES") == "1":
            pytest.fail(f"required test service unavailable: {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


def _s3_state(dest: S3DestinationSettings) -> dict[str, bytes]:
    async def read() -> dict[str, bytes]:
        backend = make_backend(dest)
        try:
            return await check_structure(backend)
        finally:
            await backend.close()

    return asyncio.run(read())


@pytest.mark.integration
def test_an_s3_peer_gets_every_change(
    tmp_path: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ep = moto.endpoint
    bucket = f"replica-{secrets.token_hex(4)}"
    ep.client().create_bucket(Bucket=bucket)
    creds = {"AWS_ACCESS_KEY_ID": ep.access_key_id, "AWS_SECRET_ACCESS_KEY": ep.secret_access_key}
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    dest = S3DestinationSettings(
        name="s3", type="s3", bucket=bucket, endpoint_url=moto.url, addressing_style="path"
    )
    cfg = write_config(tmp_path)
    text = cfg.read_text().replace(
        f'name = "b"\ntype = "fs"\npath = "{tmp_path / "b"}"',
        f'name = "s3"\ntype = "s3"\nbucket = "{bucket}"\nendpoint_url = "{moto.url}"\n'
        'addressing_style = "path"',
    )
    cfg.write_text(text)
    src = tmp_path / "src"
    daemon = Daemon(cfg, tmp_path / "daemon.log", env=creds)
    daemon.wait_ready()
    model = os.urandom(600_000)
    (src / "model.safetensors").write_bytes(model)
    (src / "notes.txt").write_bytes(b"run 1")
    (src / "old.bin").write_bytes(os.urandom(30_000))

    def both_current() -> bool:
        tree = source_state(src)
        return peer_state(tmp_path / "a") == tree and _s3_state(dest) == tree

    wait_until(both_current, "first state at both peers", daemon)
    (src / "model.safetensors").write_bytes(model[:300_000] + os.urandom(100) + model[300_100:])
    (src / "old.bin").unlink()
    wait_until(both_current, "second state at both peers", daemon)
    assert daemon.stop() == 0, daemon.log_tail()
    s3 = [d for d in log_events(tmp_path / "daemon.log", "durable") if d["destination"] == "s3"]
    rewrite = [d for d in s3 if d["key"] == "model.safetensors"][-1]
    assert rewrite["deduplicated_bytes"] > rewrite["shipped_bytes"]
    print(
        f"S3 peer (moto): {len(s3)} versions durable; the rewrite shipped "
        f"{rewrite['shipped_bytes']} bytes, deduplicated {rewrite['deduplicated_bytes']}"
    )
