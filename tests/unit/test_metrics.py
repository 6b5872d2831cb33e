"""Telemetry and its HTTP endpoint, over real HTTP on 127.0.0.1.

The exposition is parsed with prometheus_client's own parser, so the names,
labels and values tested are what Prometheus would store.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from replicator.errors import ConfigError
from replicator.events import ChangeEvent, Kind
from replicator.metrics import (
    MetricsServer,
    PendingSet,
    SourceLink,
    Telemetry,
    parse_address,
    serve,
)
from replicator.sources import Backlog

PEERS = ["peer-a", "peer-b"]
SECRET_KEY = "datasets/customer-7/shard-000017.jsonl"


def event(key: str = SECRET_KEY, age: float = 0.0, observed: int = 0) -> ChangeEvent:
    return ChangeEvent(
        source="src",
        bucket="local",
        key=key,
        kind=Kind.CREATED,
        event_time_ns=time.time_ns() - int(age * 1e9),
        size=100,
        observed=observed,
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: MetricsServer) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Telemetry, MetricsServer]]:
    telemetry = Telemetry(PEERS, {"peer-a": 60.0, "peer-b": 300.0})
    server = await serve(telemetry, "127.0.0.1:0")
    try:
        yield telemetry, server
    finally:
        await server.close()


async def test_rpo_is_the_age_of_the_oldest_pending_change_at_scrape_time(
    served: tuple[Telemetry, MetricsServer],
) -> None:
    telemetry, server = served
    old, new = event("a", age=5.0), event("b", age=1.0)
    telemetry.pending("peer-a", old, 10)
    telemetry.pending("peer-a", new, 20)
    first = await scrape(server)
    rpo = value(first, "replicator_rpo_seconds", destination="peer-a")
    assert 5.0 <= rpo < 6.0
    assert value(first, "replicator_rpo_seconds", destination="peer-b") == 0.0
    assert value(first, "replicator_pending_events", destination="peer-a") == 2
    assert value(first, "replicator_pending_bytes", destination="peer-a") == 30
    await asyncio.sleep(0.2)  # computed at scrape time: it grows while nothing happens
    later = value(await scrape(server), "replicator_rpo_seconds", destination="peer-a")
    assert later >= rpo + 0.2
    telemetry.durable("peer-a", old, shipped_bytes=7, deduplicated_bytes=3)
    after = await scrape(server)
    assert 1.0 <= value(after, "replicator_rpo_seconds", destination="peer-a") < 2.0
    telemetry.settled("peer-a", new)
    done = await scrape(server)
    assert value(done, "replicator_rpo_seconds", destination="peer-a") == 0.0
    assert value(done, "replicator_pending_bytes", destination="peer-a") == 0


async def test_source_backlog_is_pending_at_every_peer(
    served: tuple[Telemetry, MetricsServer],
) -> None:
    telemetry, server = served
    oldest = time.time_ns() - 10 * 10**9
    telemetry.set_source_backlog(lambda: Backlog(events=3, oldest_time_ns=oldest))
    telemetry.pending("peer-a", event(age=2.0), 5)
    samples = await scrape(server)
    for peer in PEERS:
        assert value(samples, "replicator_rpo_seconds", destination=peer) >= 10.0
    assert value(samples, "replicator_pending_events", destination="peer-a") == 4
    assert value(samples, "replicator_pending_events", destination="peer-b") == 3


async def test_counters_histogram_and_static_gauges(
    served: tuple[Telemetry, MetricsServer],
) -> None:
    telemetry, server = served
    e = event(age=2.0)
    telemetry.pending("peer-b", e, 100)
    telemetry.durable("peer-b", e, shipped_bytes=40, deduplicated_bytes=60)
    telemetry.outcome("src", "durable")
    telemetry.source_bytes(100)
    telemetry.destination_error("peer-a", "put", "TransientStoreError")
    lag = {("events", 3): 12}
    telemetry.set_consumer_lag(lambda: lag)
    telemetry.kafka_gap("events", 3)
    s = await scrape(server)
    assert value(s, "replicator_shipped_bytes_total", destination="peer-b") == 40
    assert value(s, "replicator_deduplicated_bytes_total", destination="peer-b") == 60
    assert value(s, "replicator_shipped_bytes_total", destination="peer-a") == 0
    assert value(s, "replicator_events_total", source="src", outcome="durable") == 1
    assert value(s, "replicator_source_bytes_read_total") == 100
    assert (
        value(
            s,
            "replicator_destination_errors_total",
            destination="peer-a",
            operation="put",
            error="TransientStoreError",
        )
        == 1
    )
    assert value(s, "replicator_kafka_consumer_lag", topic="events", partition="3") == 12
    assert value(s, "replicator_kafka_gaps_total", topic="events", partition="3") == 1
    lag[("events", 3)] = 5  # read at scrape time
    later = await scrape(server)
    assert value(later, "replicator_kafka_consumer_lag", topic="events", partition="3") == 5
    name = "replicator_replication_latency_seconds"
    assert value(s, name + "_count", destination="peer-b") == 1
    assert value(s, name + "_bucket", destination="peer-b", le="1.0") == 0
    assert value(s, name + "_bucket", destination="peer-b", le="5.0") == 1
    assert value(s, name + "_sum", destination="peer-b") >= 2.0
    last = value(s, "replicator_last_durable_event_timestamp_seconds", destination="peer-b")
    assert last == pytest.approx(e.event_time_ns / 1e9)
    assert value(s, "replicator_rpo_target_seconds", destination="peer-a") == 60
    assert value(s, "replicator_rpo_target_seconds", destination="peer-b") == 300
    assert any(k[0] == "replicator_build_info" for k in s)
    labels = {v for (_, pairs) in s for (_, v) in pairs}
    assert SECRET_KEY not in labels  # a key never becomes a label


async def test_health_readiness_and_status(served: tuple[Telemetry, MetricsServer]) -> None:
    telemetry, server = served
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str]:
            async with session.get(server.url + path) as resp:
                return resp.status, await resp.text()

        assert (await get("/healthz"))[0] == 200
        assert (await get("/readyz"))[0] == 503
        telemetry.set_ready(True)
        status, text = await get("/readyz")
        assert status == 503
        assert "peer-a" in text
        telemetry.set_peer_up("peer-a", True)
        telemetry.set_peer_up("peer-b", True)
        assert (await get("/readyz"))[0] == 200
        telemetry.pending("peer-a", event(age=120.0), 1)
        async with session.get(server.url + "/status") as resp:
            snap = await resp.json()
    a, b = snap["destinations"]["peer-a"], snap["destinations"]["peer-b"]
    assert a["over_target"] is True
    assert a["rpo_seconds"] >= 120
    assert a["rpo_target_seconds"] == 60
    assert b["over_target"] is False
    assert snap["ready"] is True


async def test_a_disconnected_source_is_not_ready_and_reconnects_count(
    served: tuple[Telemetry, MetricsServer],
) -> None:
    """A source holding a connection (Kafka) is polled: /readyz, replicator_ready,
    replicator_source_connected and the reconnect counter follow it without any call."""
    telemetry, server = served
    telemetry.set_ready(True)
    for peer in PEERS:
        telemetry.set_peer_up(peer, True)
    problem: list[str | None] = [None]
    replaced = [0]
    telemetry.set_source_link(SourceLink(lambda: problem[0], lambda: replaced[0]))
    async with aiohttp.ClientSession() as session:

        async def readyz() -> tuple[int, str]:
            async with session.get(server.url + "/readyz") as resp:
                return resp.status, await resp.text()

        assert await readyz() == (200, "ready\n")
        up = await scrape(server)
        problem[0] = "kafka group coordinator not answering for 6 s"
        assert await readyz() == (
            503,
            "not ready: source not connected: kafka group coordinator not answering for 6 s\n",
        )
        down = await scrape(server)
        telemetry.set_peer_up("peer-b", False)  # both reasons are named
        assert (await readyz())[1] == (
            "not ready: peer down: peer-b; source not connected: "
            "kafka group coordinator not answering for 6 s\n"
        )
        problem[0], replaced[0] = None, 1
        telemetry.set_peer_up("peer-b", True)
        again = await scrape(server)
    for samples, ready, connected, reconnects in ((up, 1, 1, 0), (down, 0, 0, 0), (again, 1, 1, 1)):
        assert value(samples, "replicator_ready") == ready
        assert value(samples, "replicator_source_connected") == connected
        assert value(samples, "replicator_kafka_reconnects_total") == reconnects
    snap = telemetry.snapshot()["source"]
    assert (snap["connected"], snap["problem"], snap["reconnects"]) == (True, None, 1)


async def test_a_directory_source_exports_no_connection_state(
    served: tuple[Telemetry, MetricsServer],
) -> None:
    names = {k[0] for k in await scrape(served[1])}
    assert not names & {"replicator_source_connected", "replicator_kafka_reconnects_total"}
    assert "connected" not in served[0].snapshot()["source"]


def test_bad_and_taken_addresses_name_the_key() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:80") == ("::1", 80)
    for bad in ["9464", "localhost:", "host:port", ":80"]:
        with pytest.raises(ConfigError, match=r"service\.metrics_address"):
            parse_address(bad)


async def test_taken_port_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            await serve(Telemetry(PEERS, {}), f"127.0.0.1:{port}")


def test_unknown_destination_is_refused() -> None:
    with pytest.raises(KeyError, match="peer-z"):
        Telemetry(PEERS, {}).pending("peer-z", event(), 1)


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 5)),
        max_size=200,
    )
)
def test_pending_set_matches_a_brute_force_model(ops: list[tuple[bool, int, int]]) -> None:
    pending = PendingSet()
    model: dict[ChangeEvent, int] = {}
    for add, ident, t in ops:
        e = ChangeEvent("s", "b", f"k{ident}", Kind.CREATED, event_time_ns=t, observed=ident)
        if add:
            pending.add(e, ident)
            model.setdefault(e, ident)
        else:
            pending.remove(e)
            model.pop(e, None)
        assert len(pending) == len(model)
        assert pending.bytes == sum(model.values())
        assert pending.oldest_ns() == min((x.event_time_ns for x in model), default=None)


def test_pending_set_heap_stays_proportional_to_what_is_pending() -> None:
    pending = PendingSet()
    stuck = ChangeEvent("s", "b", "stuck", Kind.CREATED, event_time_ns=0)
    pending.add(stuck, 1)
    for i in range(20_000):
        e = ChangeEvent("s", "b", "k", Kind.CREATED, event_time_ns=i + 1, observed=i)
        pending.add(e, 1)
        pending.remove(e)
    assert pending.oldest_ns() == 0
    assert len(pending._heap) < 2 * 1024 + 10


def test_durable_and_errors_emit_one_log_event_each() -> None:
    telemetry = Telemetry(PEERS, {})
    e = event(age=1.0)
    with capture_logs() as logs:
        telemetry.pending("peer-a", e, 100)
        telemetry.durable("peer-a", e, shipped_bytes=30, deduplicated_bytes=70)
        telemetry.destination_error("peer-b", "put_pack", "AccessDeniedError")
    durable, error = logs
    assert durable["event"] == "durable"
    assert durable["destination"] == "peer-a"
    assert durable["key"] == SECRET_KEY
    assert durable["event_time_ns"] == e.event_time_ns
    assert (durable["shipped_bytes"], durable["deduplicated_bytes"]) == (30, 70)
    assert durable["latency_seconds"] >= 1.0
    assert error["log_level"] == "warning"
    assert (error["destination"], error["operation"], error["error"]) == (
        "peer-b",
        "put_pack",
        "AccessDeniedError",
    )


def test_gap_counters_start_at_zero_for_each_partition_read() -> None:
    # increase() needs a sample before the first gap, or that gap never shows.
    telemetry = Telemetry(PEERS, {})
    lag = {("events", 0): 3, ("events", 1): 0}
    telemetry.set_consumer_lag(lambda: lag)
    text = generate_latest(telemetry.registry).decode()
    assert 'replicator_kafka_gaps_total{partition="1",topic="events"}' not in text
    text = generate_latest(telemetry.registry).decode()  # after one read of the lag map
    for p in ("0", "1"):
        assert f'replicator_kafka_gaps_total{{partition="{p}",topic="events"}} 0.0' in text


def test_heartbeat_age_follows_the_newest_durable_canary() -> None:
    t = Telemetry(PEERS, {})
    now = time.time_ns()
    t.durable(
        PEERS[0], event("_replicator/heartbeat", age=5), shipped_bytes=0, deduplicated_bytes=0
    )
    assert t.heartbeat.ages(now) == {}  # the canary is not watched yet
    t.heartbeat.enable("_replicator/heartbeat", 2.0)
    t.heartbeat.beaten(now - int(30e9))
    old, new = event("_replicator/heartbeat", age=9), event("_replicator/heartbeat", age=3)
    for e in (new, old, event("other", age=1)):  # out of order; another key ignored
        t.durable(PEERS[0], e, shipped_bytes=0, deduplicated_bytes=0)
    ages = t.heartbeat.ages(now)
    assert ages[PEERS[0]] == pytest.approx((now - new.event_time_ns) / 1e9)
    assert ages[PEERS[1]] == pytest.approx(30.0)  # nothing durable: since the first beat
    t.heartbeat.disable()
    text = generate_latest(t.registry).decode()
    assert "replicator_heartbeat_interval_seconds 0.0" in text
    assert f'replicator_heartbeat_age_seconds{{destination="{PEERS[1]}"}}' in text
