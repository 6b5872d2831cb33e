"""The service as a listing drives it: events pending only at the lanes that
lack them, a listed version's observation number in its manifest, and the
run policy (a peer whose retries are spent is down for the run).

Real directory peers, real pack writers and group commits; the source is a
fixed list of events over real files (what ``sources/listing.py`` yields)."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from replicator.config import ChunkingSettings, ServiceSettings, StoreSettings
from replicator.events import ChangeEvent, Kind
from replicator.metrics import Telemetry
from replicator.origins import ObjectReader, ObjectVersion
from replicator.origins.fs import FsOrigin, FsReader
from replicator.pipeline.lanes import Lane, Policy, open_lane
from replicator.pipeline.service import Service
from replicator.pipeline.tracking import Observer
from replicator.sources import Backlog, Outcome
from replicator.store.backend import Payload
from replicator.store.backends import FsBackend
from replicator.store.format import StoreConfig
from replicator.store.peer import Peer
from replicator.store.reader import list_versions, read_manifest

WAIT = 60.0  # a liveness bound, not a timing assertion
PARAMS = ChunkingSettings().params()


class ListSource:
    """A fixed list of events; notes each one's outcome."""

    name = "list"

    def __init__(self, events: Sequence[ChangeEvent]) -> None:
        self.items = list(events)
        self.outcomes: dict[str, Outcome] = {}
        self.all_done = asyncio.Event()

    async def start(self) -> None:
        return None

    async def events(self) -> AsyncIterator[ChangeEvent]:
        for event in self.items:
            yield event

    async def done(self, event: ChangeEvent, outcome: Outcome) -> None:
        self.outcomes[event.key] = outcome
        if len(self.outcomes) == len(self.items):
            self.all_done.set()

    def backlog(self) -> Backlog:
        return Backlog()

    async def close(self) -> None:
        return None


class BrokenDisk(FsBackend):
    """A real directory store whose pack and manifest writes fail with EIO."""

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        raise OSError(errno.EIO, "Input/output error", key)

    async def put_spool(self, key: str, spool: object) -> None:
        raise OSError(errno.EIO, "Input/output error", key)


class Heard(Observer):
    """Notes the lanes taken down, the versions not sent to them, and the
    durable and failed ones (``changed`` is set at each)."""

    def __init__(self) -> None:
        self.downs: dict[str, str] = {}
        self.unsent: list[tuple[str, str]] = []
        self.durables: set[tuple[str, str]] = set()
        self.failures: set[tuple[str, str]] = set()
        self.changed = asyncio.Event()

    def durable(
        self, lane: str, event: ChangeEvent, written: bool, shipped: int, deduplicated: int
    ) -> None:
        self.durables.add((lane, event.key))
        self.changed.set()

    def failed(self, lane: str | None, event: ChangeEvent, exc: BaseException) -> None:
        self.failures.add((lane or "", event.key))
        self.changed.set()

    def down(self, lane: str, reason: str) -> None:
        self.downs[lane] = reason

    def not_sent(self, lane: str, event: ChangeEvent) -> None:
        self.unsent.append((lane, event.key))


def _event(root: Path, key: str, *, observed: int = 0, listed: bool = False) -> ChangeEvent:
    st = os.stat(root / key)
    return ChangeEvent(
        "fs",
        "b",
        key,
        Kind.CREATED,
        st.st_ctime_ns,
        st.st_size,
        observed=observed,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        listed=listed,
    )


async def _run(
    tmp_path: Path,
    source: ListSource,
    backends: dict[str, FsBackend],
    *,
    policy: Policy = Policy.RETRY,
    routes: dict[str, set[str]] | None = None,
    observer: Observer | None = None,
    origin: FsOrigin | None = None,
    batches: bool = False,
) -> tuple[Service, list[Lane]]:
    store = StoreSettings(pack_size=1 << 20, cache_dir=tmp_path / "cache", max_pack_delay=0.05)
    lanes = []
    for name, backend in backends.items():
        peer = Peer(name, backend, StoreConfig(PARAMS), f"fs:{name}")
        lanes.append(await open_lane(peer, store, 5.0, policy=policy))
    origin = origin or FsOrigin(tmp_path / "src", "b")

    async def opener(event: ChangeEvent) -> ObjectReader:
        return await origin.open(event.object_version())

    service = Service(
        source,
        opener,
        lanes,
        Telemetry(list(backends), dict.fromkeys(backends, 60.0)),
        ServiceSettings(max_in_flight=2),
        params=PARAMS,
        window_size=FsOrigin.window_size,
        etag_is_digest=True,
        route=None if routes is None else (lambda e: routes.get(e.key)),
        observer=observer,
        batch_reader=origin if batches else None,
    )
    service.start()
    return service, lanes


async def _keys(backend: FsBackend) -> dict[str, list[int]]:
    """Per key, the observation numbers of its manifests."""
    out: dict[str, list[int]] = {}
    async for key, versions in list_versions(backend, "b"):
        out[key] = [(await read_manifest(backend, v)).identity.observed for v in versions]
    return out


def _tree(tmp_path: Path, n: int) -> list[str]:
    (tmp_path / "src").mkdir()
    keys = [f"f{i}" for i in range(n)]
    for k in keys:
        (tmp_path / "src" / k).write_bytes(os.urandom(5_000))
    return keys


async def _close(service: Service, lanes: list[Lane], seconds: float = 10.0) -> None:
    await service.drain(seconds)
    for lane in lanes:
        await lane.close()


async def test_an_event_is_pending_only_at_the_lanes_that_lack_it(tmp_path: Path) -> None:
    keys = _tree(tmp_path, 3)
    source = ListSource([_event(tmp_path / "src", k) for k in keys])
    backends = {n: FsBackend(tmp_path / n, n) for n in ("a", "b")}
    routes = {"f0": {"a"}, "f1": {"a", "b"}, "f2": set()}
    service, lanes = await _run(tmp_path, source, backends, routes=routes)
    try:
        await asyncio.wait_for(source.all_done.wait(), WAIT)
    finally:
        await _close(service, lanes)
    print("outcomes", source.outcomes)
    assert set(source.outcomes.values()) == {Outcome.DURABLE}
    assert sorted(await _keys(backends["a"])) == ["f0", "f1"]
    assert sorted(await _keys(backends["b"])) == ["f1"], "b was not routed f0, nobody f2"


async def test_a_listed_version_writes_its_observation_number(tmp_path: Path) -> None:
    """A listing's event names the observation number its manifest takes
    (after the peer's manifests at that event time); another source's
    ``observed`` is its own token and is never written."""
    _tree(tmp_path, 2)
    src = tmp_path / "src"
    source = ListSource([_event(src, "f0", observed=2, listed=True), _event(src, "f1", observed=7)])
    backends = {"a": FsBackend(tmp_path / "a", "a")}
    service, lanes = await _run(tmp_path, source, backends)
    try:
        await asyncio.wait_for(source.all_done.wait(), WAIT)
    finally:
        await _close(service, lanes)
    assert await _keys(backends["a"]) == {"f0": [2], "f1": [0]}


async def test_a_run_takes_a_failing_peer_down_and_the_other_keeps_its_copies(
    tmp_path: Path,
) -> None:
    keys = _tree(tmp_path, 6)
    source = ListSource([_event(tmp_path / "src", k) for k in keys])
    backends = {
        "good": FsBackend(tmp_path / "good", "good"),
        "bad": BrokenDisk(tmp_path / "bad", "bad"),
    }
    heard = Heard()
    service, lanes = await _run(tmp_path, source, backends, policy=Policy.RUN, observer=heard)
    try:
        await asyncio.wait_for(source.all_done.wait(), WAIT)
        assert service.held() == 0, "a down lane keeps nothing"
    finally:
        await _close(service, lanes)
    print("down:", heard.downs, "not sent:", heard.unsent)
    assert set(source.outcomes.values()) == {Outcome.FAILED}, "not durable at every peer"
    assert sorted(await _keys(backends["good"])) == keys
    assert list(heard.downs) == ["bad"] and "Input/output error" in heard.downs["bad"]
    assert lanes[1].down is not None and lanes[0].down is None


async def test_the_daemon_policy_keeps_retrying_a_failing_peer(tmp_path: Path) -> None:
    keys = _tree(tmp_path, 2)
    source = ListSource([_event(tmp_path / "src", k) for k in keys])
    backends = {
        "good": FsBackend(tmp_path / "good", "good"),
        "bad": BrokenDisk(tmp_path / "bad", "bad"),
    }
    heard = Heard()
    service, lanes = await _run(tmp_path, source, backends, observer=heard)

    async def failed_once() -> None:
        want = {(n, k) for k in keys for n in ("good", "bad")}
        while heard.durables | heard.failures != want:
            heard.changed.clear()
            await heard.changed.wait()

    try:
        await asyncio.wait_for(failed_once(), WAIT)
        assert {n for n, _ in heard.durables} == {"good"}
        assert lanes[1].down is None and service.held() == len(keys), "kept, to retry"
        assert source.outcomes == {}
    finally:
        await _close(service, lanes, 0.1)  # the failing peer keeps its versions


class CountingOrigin(FsOrigin):
    """A real FsOrigin that counts batched and single reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "b")
        self.batches: list[int] = []
        self.opened = 0

    async def read_many(self, objs: Sequence[ObjectVersion]) -> list[bytes | None]:
        self.batches.append(len(objs))
        return await super().read_many(objs)

    async def open(self, obj: ObjectVersion) -> FsReader:
        self.opened += 1
        return await super().open(obj)


async def test_small_versions_are_read_and_committed_in_batches(tmp_path: Path) -> None:
    """Small versions wanted by the same lanes are read in one call, placed
    together and committed together; each is durable at both peers."""
    keys = _tree(tmp_path, 60)
    await asyncio.sleep(0.05)  # past the racy window: every file can be batched
    source = ListSource([_event(tmp_path / "src", k) for k in keys])
    backends = {n: FsBackend(tmp_path / n, n) for n in ("a", "b")}
    origin = CountingOrigin(tmp_path / "src")
    service, lanes = await _run(tmp_path, source, backends, origin=origin, batches=True)
    try:
        await asyncio.wait_for(source.all_done.wait(), WAIT)
    finally:
        await _close(service, lanes)
    print("batches", origin.batches, "opened", origin.opened)
    assert set(source.outcomes.values()) == {Outcome.DURABLE}
    assert sum(origin.batches) == len(keys) and len(origin.batches) < len(keys) // 2
    assert origin.opened == 0
    for backend in backends.values():
        assert sorted(await _keys(backend)) == sorted(keys)
