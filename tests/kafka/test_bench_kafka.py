"""``replicator bench e2e --source kafka`` at a tiny scale, against the real
broker and moto server: the output is well-formed, every object the bench
announced is durable at both peers (read back from the peers themselves, not
only from the daemon's log), and the bench leaves no topic or object behind.
No timing thresholds: the figures are printed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.kafka.kafkad import peer_state, s3_env
from tests.services.kafka.server import KafkaBroker
from tests.services.moto_server import MotoServer
from tests.services.s3client import bucket_keys

pytestmark = pytest.mark.integration


def bench(broker: KafkaBroker, moto: MotoServer, bucket: str, *args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "replicator", "bench", "e2e", "--source", "kafka", "--json"]
    argv += ["--bootstrap-servers", broker.bootstrap, "--endpoint-url", moto.url]
    argv += ["--bucket", bucket, *args]
    proc = subprocess.run(
        argv,
        env=os.environ | s3_env(moto),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    print(f"\nbench e2e {' '.join(args)}:", json.dumps(result, indent=1))
    return result


async def bench_topics(broker: KafkaBroker) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith("replicator-bench-")]
    finally:
        await admin.close()


async def held_keys(peer: Path) -> set[str]:
    """Live keys at a peer; asserts no manifest names a missing chunk."""
    return set(await peer_state(peer))


async def test_steady_load_every_object_durable_and_figures_well_formed(
    tmp_path: Path,
    kafka_broker: KafkaBroker,
    moto_source: MotoServer,
    source_bucket: tuple[Any, str],
) -> None:
    client, bucket = source_bucket
    args = ["--duration", "3", "--rate", "10", "--partitions", "2", "--max-size", "64KiB"]
    result = await asyncio.to_thread(
        bench, kafka_broker, moto_source, bucket, *args, "--keep", str(tmp_path / "run")
    )
    assert result["source"] == "kafka" and result["partitions"] == 2
    assert result["not_durable"] == 0 and result["daemon_exit"] == 0 and result["settled"]
    assert result["objects"] >= 20 and result["offered_objects_per_second"] > 0
    assert result["daemon_cpu_share"] > 0 and result["durable_repeats"] >= 0
    assert result["announce_delay_seconds"]["count"] == result["objects"]
    assert set(result["latency_seconds"]) == {"small"}
    small = result["latency_seconds"]["small"]
    assert small["count"] == result["objects"] and 0 < small["p50"] <= small["p99"] <= small["max"]
    assert result["rpo_samples"] > 0
    assert set(result["rpo_error_seconds"]) == {"peer-a", "peer-b"}
    for err in result["rpo_error_seconds"].values():
        assert err["count"] > 0 and err["max_either_end"] <= err["max"]
    assert result["throughput"]["objects_per_second"] > 0
    for peer in ("peer-a", "peer-b"):
        keys = await held_keys(tmp_path / "run" / peer)
        assert len(keys) == result["objects"], f"{peer} holds {len(keys)} keys"
        assert all(k.startswith("replicator-bench/") for k in keys)
    # --keep keeps the objects; the topics go whatever happens.
    assert len(bucket_keys(client, bucket)) == result["objects"]
    assert await bench_topics(kafka_broker) == []


async def test_scale_out_one_then_two_daemons_drain_the_backlog(
    kafka_broker: KafkaBroker, moto_source: MotoServer, source_bucket: tuple[Any, str]
) -> None:
    client, bucket = source_bucket
    args = ["--scale-out", "--backlog", "24", "--partitions", "2", "--max-size", "8KiB"]
    args += ["--max-in-flight", "2", "--source-latency", "0.05"]
    result = await asyncio.to_thread(bench, kafka_broker, moto_source, bucket, *args)
    assert result["objects"] == 24 and result["window_bound_objects_per_second"] == 40.0
    assert [r["daemons"] for r in result["runs"]] == [1, 2]
    for run in result["runs"]:
        assert run["objects"] == 24 and run["not_durable"] == 0 and run["daemon_exit"] == 0
        assert len(run["objects_per_daemon"]) == run["daemons"]
        assert sum(run["objects_per_daemon"]) >= 24 and run["objects_per_second"] > 0
    assert all(result["runs"][1]["objects_per_daemon"])  # both members did work
    assert result["speedup"] > 0
    assert bucket_keys(client, bucket) == [] and await bench_topics(kafka_broker) == []
