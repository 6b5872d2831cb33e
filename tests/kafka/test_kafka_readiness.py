"""The Kafka source's connection state: `/readyz`, `/metrics` and `replicator status`.

A real daemon (child process) follows a moto-server bucket through the real
broker; the broker is killed for long enough that the source's bounded
coordinator calls fail, then restarted. While it is down the daemon must
answer not ready with "source not connected", export
``replicator_source_connected 0`` and say so in `replicator status`; once the
broker is back, ready again, and the events announced after are replicated.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.harness import Daemon, replicator, wait_until
from tests.kafka.kafkad import (
    PEERS,
    Announcer,
    missing_at,
    s3_env,
    wait_assigned,
    wait_committed_to_end,
    write_config,
)
from tests.kafka.kafkautil import Topics
from tests.services.moto_server import MotoServer

pytestmark = pytest.mark.integration


def source_metrics(daemon: Daemon) -> dict[str, float]:
    """replicator_source_connected and replicator_kafka_reconnects_total, as scraped."""
    code, body = daemon.get("/metrics")
    assert code == 200
    wanted = ("replicator_source_connected", "replicator_kafka_reconnects_total")
    return {
        s.name: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name in wanted
    }


def readyz(daemon: Daemon) -> tuple[int, str]:
    code, body = daemon.get("/readyz")
    return code, body.decode()


async def test_readyz_says_source_not_connected_while_the_broker_is_down(
    tmp_path: Path, topics: Topics, moto_source: MotoServer, versioned: tuple[Any, str]
) -> None:
    client, bucket = versioned
    env = s3_env(moto_source)
    cfg = write_config(tmp_path, topics, moto_source, bucket)
    daemon = Daemon(cfg, tmp_path / "daemon.log", env=env)
    try:
        await asyncio.to_thread(daemon.wait_ready)
        await wait_assigned(daemon)
        assert source_metrics(daemon) == {
            "replicator_source_connected": 1.0,
            "replicator_kafka_reconnects_total": 0.0,
        }
        topics.broker.stop(kill=True)
        try:
            took = await asyncio.to_thread(
                wait_until, lambda: readyz(daemon)[0] == 503, "not ready", daemon
            )
            code, text = readyz(daemon)
            down_metrics = source_metrics(daemon)
            cli = await asyncio.to_thread(replicator, "status", "--config", str(cfg), "--json")
        finally:
            restart = await asyncio.to_thread(topics.broker.start)
        back = await asyncio.to_thread(
            wait_until, lambda: readyz(daemon)[0] == 200, "ready again", daemon
        )
        async with Announcer(client, bucket, topics) as ann:
            for i in range(5):
                await ann.announce(f"after/{i}.bin", os.urandom(5_000 + i))
        await wait_committed_to_end(topics, daemon)
        up_metrics = source_metrics(daemon)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    print(f"\nbroker killed: not ready after {took:.1f} s ({text.strip()!r}); broker back in "
          f"{restart:.1f} s, ready again {back:.1f} s after; metrics up {up_metrics}")  # fmt: skip
    assert code == 503 and text.startswith("not ready: source not connected: kafka "), text
    assert down_metrics["replicator_source_connected"] == 0
    assert cli.returncode == 0, cli.stderr  # every peer within its target
    source = json.loads(cli.stdout)["source"]
    assert source["connected"] is False and source["problem"].startswith("kafka "), source
    assert up_metrics["replicator_source_connected"] == 1
    replaced = daemon.log_path.read_text(errors="replace").count("kafka source: consumer replaced")
    assert up_metrics["replicator_kafka_reconnects_total"] == replaced
    for peer in PEERS:
        assert not await missing_at(tmp_path / peer, ann.puts)
