"""The daemon's own heartbeat (``service.heartbeat_interval_seconds``): the
real ``replicator run`` writes the canary into its watched directory, and
its /metrics serves ``replicator_heartbeat_age_seconds{destination}``: low
at two healthy peers; growing at a peer made really unwritable (``chattr
+i``) while the other stays fresh; falling again once the peer is back.

Assertions compare clocks, never speeds: an age is checked against the
moment the peer went down or came back (the same wall clock the canary's
event time comes from)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from replicator.config import HEARTBEAT_KEY
from tests.daemon import harness
from tests.deploy import live_sources
from tests.deploy.test_live_daemon import _chattr_blocks_root, _immutable
from tests.kafka.kafkad import Announcer, Put
from tests.services.kafka.server import KafkaBroker
from tests.services.moto_server import MotoServer

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5
#: How long peer b stays unwritable (several beats).
DOWN_S = 5.0
#: ctime and time.time() are one clock, but ctime is taken at the kernel's
#: coarse tick (a few ms): the slack of "older than" comparisons.
TICK_S = 0.05


def _config(tmp: Path, extra: str = "") -> Path:
    service = f"retry_max_seconds = 1\nheartbeat_interval_seconds = {INTERVAL_S}\n{extra}"
    cfg: Path = harness.write_config(tmp, extra=service)
    return cfg


def _gauges(daemon: Any, name: str) -> dict[str, float]:
    code, body = daemon.get("/metrics")
    assert code == 200, body
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == name:
            for sample in family.samples:
                out[sample.labels.get("destination", "")] = sample.value
    return out


def _ages(daemon: Any) -> dict[str, float]:
    return _gauges(daemon, "replicator_heartbeat_age_seconds")


def _fresh(daemon: Any, peer: str, since: float) -> bool:
    """A canary written after ``since`` (wall clock) is durable at ``peer``."""
    age = _ages(daemon).get(peer)
    return age is not None and age < time.time() - since


def test_heartbeat_age_per_peer_follows_an_outage(tmp_path: Path) -> None:
    if not _chattr_blocks_root(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    daemon = harness.Daemon(_config(tmp_path), tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        assert _gauges(daemon, "replicator_heartbeat_interval_seconds") == {"": INTERVAL_S}
        started = time.time()
        both = harness.PEERS
        harness.wait_until(lambda: all(_fresh(daemon, p, started) for p in both), "beats", daemon)
        healthy = _ages(daemon)
        print(f"healthy: heartbeat ages {healthy} (interval {INTERVAL_S} s)")

        _immutable(tmp_path / "b", True)
        down = time.time()
        time.sleep(DOWN_S)
        elapsed = time.time() - down  # before the scrape: the age is taken later
        ages = _ages(daemon)
        print(f"peer b unwritable for {elapsed:.2f} s: heartbeat ages {ages}")
        # b holds nothing written after it went down; a kept getting beats.
        assert ages["b"] >= elapsed - TICK_S, ages
        assert ages["a"] < elapsed, ages
        assert _fresh(daemon, "a", down), "a got no beat while b was down"

        _immutable(tmp_path / "b", False)
        up = time.time()
        took = harness.wait_until(lambda: _fresh(daemon, "b", up), "beat at b once back", daemon)
        after = _ages(daemon)
        print(f"peer b back: a beat written after its return durable in {took:.2f} s; {after}")
        assert after["b"] < ages["b"]
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _immutable(tmp_path / "b", False)
        if daemon.proc.poll() is None:
            daemon.kill()


def test_a_restarted_daemon_reports_the_canary_already_at_the_peers(tmp_path: Path) -> None:
    """Restarted with the canary's directory made read-only: no new beat can
    be written, and the age is that of the canary the first run left at
    each peer (listed once at start), growing, not absent."""
    if not _chattr_blocks_root(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    cfg = _config(tmp_path)
    first = harness.Daemon(cfg, tmp_path / "first.log")
    beats = tmp_path / "src" / "_replicator"
    try:
        first.wait_ready()
        started = time.time()
        both = harness.PEERS
        harness.wait_until(lambda: all(_fresh(first, p, started) for p in both), "beats", first)
        assert first.stop() == 0, first.log_tail()
        stopped = time.time()
        subprocess.run(["chattr", "+i", str(beats)], check=True)
        second = harness.Daemon(cfg, tmp_path / "second.log")
        second.wait_ready()
        harness.wait_until(lambda: set(_ages(second)) == set(both), "ages listed", second)
        assert harness.log_events(second.log_path, _DISABLED), second.log_tail()
        since = time.time() - stopped  # before the scrape: the age is taken later
        ages = _ages(second)
        print(f"restarted {since:.2f} s after the first run stopped, no new beat: ages {ages}")
        assert all(ages[p] >= since for p in both), ages
        assert second.stop() == 0, second.log_tail()
    finally:
        subprocess.run(["chattr", "-i", str(beats)], check=False)
        harness.Daemon.reap()


def test_heartbeat_off_by_default(tmp_path: Path) -> None:
    daemon = harness.Daemon(harness.write_config(tmp_path), tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        assert _gauges(daemon, "replicator_heartbeat_interval_seconds") == {"": 0.0}
        assert _ages(daemon) == {}
        assert not (tmp_path / "src" / "_replicator").exists()
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()


def test_an_ignored_canary_key_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 'heartbeat_key = "_replicator/.beat"')
    done = harness.replicator("check-config", "--config", str(cfg))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "service.heartbeat_key '_replicator/.beat'" in done.stderr
    assert "'.*'" in done.stderr and "Traceback" not in done.stderr
    cfg = _config(tmp_path, 'heartbeat_key = "../beat"')
    done = harness.replicator("check-config", "--config", str(cfg))
    assert done.returncode == 2 and "heartbeat_key" in done.stderr, done.stderr


def test_a_read_only_source_disables_the_heartbeat(tmp_path: Path) -> None:
    if not _chattr_blocks_root(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    cfg = _config(tmp_path)
    subprocess.run(["chattr", "+i", str(tmp_path / "src")], check=True)
    daemon = harness.Daemon(cfg, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        harness.wait_until(
            lambda: bool(harness.log_events(daemon.log_path, _DISABLED)), "disabled line", daemon
        )
        line = harness.log_events(daemon.log_path, _DISABLED)[0]
        assert str(tmp_path / "src" / "_replicator") in line["error"], line
        assert _gauges(daemon, "replicator_heartbeat_interval_seconds") == {"": 0.0}
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "src")], check=False)
        if daemon.proc.poll() is None:
            daemon.kill()


def test_s3_source_heartbeat_through_kafka(
    tmp_path: Path, kafka_broker: KafkaBroker, moto_source: MotoServer
) -> None:
    """The daemon PUTs the canary into its source bucket; the test plays the
    bucket's event notification (moto sends none), as every Kafka test does:
    each new canary version is announced with its PUT time as eventTime."""
    run = live_sources.kafka_daemon(
        tmp_path, kafka_broker, moto_source, extra="heartbeat_interval_seconds = 1", announce=False
    )
    try:
        started = time.time()
        announced = asyncio.run(_bridge_until_fresh(run, started))
        ages = _ages(run.daemon)
        print(f"s3 source via Kafka: {announced} canary versions announced; ages {ages}")
        assert set(ages) == set(harness.PEERS)
        assert run.daemon.stop() == 0, run.daemon.log_tail()
    finally:
        harness.Daemon.reap()


async def _bridge_until_fresh(run: live_sources.KafkaRun, started: float) -> int:
    """Announce new canary versions until both peers hold one written after ``started``."""
    seen: set[str] = set()
    async with Announcer(run.client, run.bucket, run.topics) as ann:
        deadline = time.monotonic() + harness.GUARD_S
        while not all(_fresh(run.daemon, p, started) for p in harness.PEERS):
            assert time.monotonic() < deadline, run.daemon.log_tail()
            listed = run.client.list_object_versions(Bucket=run.bucket, Prefix=HEARTBEAT_KEY)
            for v in listed.get("Versions", []):
                if v["VersionId"] not in seen:
                    seen.add(v["VersionId"])
                    await ann.send(*_canary(run, v["VersionId"], ann))
            await asyncio.sleep(0.2)
    return len(seen)


def _canary(run: live_sources.KafkaRun, version: str, ann: Announcer) -> tuple[Put, bytes]:
    got = run.client.get_object(Bucket=run.bucket, Key=HEARTBEAT_KEY, VersionId=version)
    body = got["Body"].read()
    # eventTime: when the PUT happened (milliseconds, as notifications carry it).
    written_ms = int(json.loads(body)["written_at"] * 1000)
    put = Put(HEARTBEAT_KEY, body, version, got["ETag"].strip('"'), written_ms * 1_000_000)
    return put, ann.message(put, "aws")


_DISABLED = (
    "heartbeat disabled: the source refuses the canary write; grant write access "
    "to that key or set service.heartbeat_interval_seconds = 0"
)
