"""A lane's backoff (capped, jittered, one outage counted once), its wanted
versions per size class, and the sd_notify sender (abstract socket names,
the watchdog period)."""

from __future__ import annotations

import os
import random
import secrets
import socket
from pathlib import Path

from replicator._native import ChunkerParams
from replicator.events import ChangeEvent, Kind
from replicator.notify import Notifier
from replicator.pipeline.lanes import Backoff, Lane, Wants
from replicator.pipeline.plan import PackWriter
from replicator.store.backends import FsBackend
from replicator.store.format import StoreConfig
from replicator.store.index_cache import IndexCache
from replicator.store.peer import Peer


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    b = Backoff(cap=4.0, base=0.5, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(12)]
    ceilings = [min(4.0, 0.5 * 2**i) for i in range(12)]
    for d, c in zip(delays, ceilings, strict=True):
        assert c / 2 <= d <= c
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jittered, not one fixed value
    b.reset()
    assert b.next_delay() <= 0.5
    print(f"delays {[round(d, 3) for d in delays]}")


async def test_failures_during_one_backoff_count_once(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path / "peer", "p")
    config = StoreConfig(ChunkerParams(4096, 16384, 65536, 1, 0))
    peer = Peer("p", backend, config, "fs:test")
    cache = IndexCache(tmp_path / "cache.sqlite", config.to_bytes())
    writer = PackWriter("p", backend, cache, 1 << 20)
    lane = Lane(peer, writer, cache, max_pack_delay=0.5, retry_cap=30.0)
    first = lane.failed()
    for _ in range(20):  # the other commits waiting on the same failed pack
        assert lane.failed() <= first
    assert lane.backoff.failures == 1 and not lane.up
    assert lane.succeeded() and lane.up and lane.backoff.failures == 0
    await lane.close()


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"replicator-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("watching /data")
        notifier.stopping("draining")
        notifier.close()
        assert systemd.recv(4096) == b"READY=1\nSTATUS=watching /data"
        assert systemd.recv(4096) == b"STOPPING=1\nSTATUS=draining"


def test_watchdog_period_is_half_of_watchdog_usec_and_only_for_this_pid() -> None:
    pid = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": pid}).watchdog_seconds == 1.5
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert Notifier({}).watchdog_seconds is None
    silent = Notifier({})
    silent.ready("no systemd")  # without NOTIFY_SOCKET: nothing, no error
    assert not silent.enabled


def test_wants_keeps_a_key_in_the_class_of_its_newest_version() -> None:
    def ev(key: str, size: int, t: int) -> ChangeEvent:
        return ChangeEvent("fs", "b", key, Kind.CREATED, t, size=size)

    wants = Wants(large_object_size=1000)
    wants["a"] = ev("a", 10, 1)
    wants["b"] = ev("b", 5000, 1)
    wants["c"] = ev("c", 20, 1)
    assert [k for k, _ in wants.items(False)] == ["a", "c"]
    assert [k for k, _ in wants.items(True)] == ["b"]
    wants["a"] = ev("a", 4000, 2)  # the file grew past the bound: now large only
    assert [k for k, _ in wants.items(False)] == ["c"]
    assert [k for k, _ in wants.items(True)] == ["b", "a"]
    assert len(wants) == 3 and "a" in wants and wants.get("a") == ev("a", 4000, 2)
    wants["c"] = ev("c", 30, 2)  # same class: keeps its place in line
    del wants["b"]
    assert "b" not in wants and wants.get("b") is None and len(wants) == 2
