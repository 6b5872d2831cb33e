"""The directory source on real inotify: which changes become which events."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator.config import FsSourceSettings
from replicator.errors import ConfigError, SupersededError
from replicator.events import ChangeEvent, Kind
from replicator.sources import Outcome
from replicator.sources.fswatch import DirectorySource

#: Hang guard for an expected event (inotify delivers in milliseconds).
GUARD_S = 20.0


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[DirectorySource]:
    (tmp_path / "src").mkdir()
    src = DirectorySource(FsSourceSettings(path=tmp_path / "src", settle_seconds=0.3))
    await src.start()
    yield src
    await src.close()


class Events:
    """Hands out the source's events through a queue (cancelling a pending
    ``anext`` would end the generator itself)."""

    def __init__(self, source: DirectorySource) -> None:
        self.queue: asyncio.Queue[ChangeEvent] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(source))

    async def _pump(self, source: DirectorySource) -> None:
        async for ev in source.events():
            await self.queue.put(ev)

    async def next(self) -> ChangeEvent:
        return await asyncio.wait_for(self.queue.get(), GUARD_S)

    async def quiet(self, seconds: float) -> list[ChangeEvent]:
        """Everything handed out within ``seconds`` (expected: nothing)."""
        await asyncio.sleep(seconds)
        got = []
        while not self.queue.empty():
            got.append(self.queue.get_nowait())
        return got


async def test_temp_then_rename_is_one_event_for_the_final_name(source: DirectorySource) -> None:
    events = Events(source)
    tmp = source.root / "model.safetensors.tmp"
    tmp.write_bytes(b"x" * 1000)
    os.replace(tmp, source.root / "model.safetensors")
    ev = await events.next()
    st = os.stat(source.root / "model.safetensors")
    assert (ev.key, ev.kind, ev.size) == ("model.safetensors", Kind.CREATED, 1000)
    assert ev.event_time_ns == st.st_ctime_ns  # the ctime, not the mtime
    assert await events.quiet(0.8) == []


async def test_ignored_names_never_become_events(source: DirectorySource) -> None:
    events = Events(source)
    (source.root / ".git").mkdir()
    for name in (".hidden", "a.partial", "b~", "c.tmp", ".git/HEAD"):
        (source.root / name).write_bytes(b"ignored")
    (source.root / "kept.txt").write_bytes(b"kept")
    ev = await events.next()
    assert ev.key == "kept.txt"
    assert await events.quiet(0.8) == []


async def test_removal_is_a_removed_event(source: DirectorySource) -> None:
    events = Events(source)
    (source.root / "f").write_bytes(b"1")
    assert (await events.next()).kind is Kind.CREATED
    (source.root / "f").unlink()
    ev = await events.next()
    assert (ev.key, ev.kind) == ("f", Kind.REMOVED)


async def test_a_file_never_closed_goes_once_unchanged_for_settle_seconds(
    source: DirectorySource,
) -> None:
    events = Events(source)
    with (source.root / "log").open("wb") as f:
        for _ in range(4):  # keeps changing for longer than settle_seconds
            f.write(b"line\n")
            f.flush()
            assert await events.quiet(0.15) == []
        ev = await events.next()  # still open, but unchanged for 0.3 s
    assert (ev.key, ev.size) == ("log", 20)


async def test_files_of_a_new_directory_are_seen(source: DirectorySource) -> None:
    events = Events(source)
    new = source.root / "run-1" / "step-10"
    new.mkdir(parents=True)
    (new / "a.bin").write_bytes(b"a")
    (new / "b.bin").write_bytes(b"b")
    keys = {(await events.next()).key, (await events.next()).key}
    assert keys == {"run-1/step-10/a.bin", "run-1/step-10/b.bin"}


async def test_a_directory_moved_out_of_the_tree_is_a_gap(
    source: DirectorySource, tmp_path: Path
) -> None:
    (source.root / "d").mkdir()
    await asyncio.sleep(0.2)  # the new directory is watched
    assert not source.gaps.is_set()
    os.rename(source.root / "d", tmp_path / "moved-away")
    await asyncio.wait_for(source.gaps.wait(), GUARD_S)


async def test_reading_is_pinned_to_the_events_version(source: DirectorySource) -> None:
    events = Events(source)
    (source.root / "f").write_bytes(b"first")
    ev = await events.next()
    (source.root / "f").write_bytes(b"other")  # same size, new ctime
    with pytest.raises(SupersededError):
        await source.open(ev)


async def test_failed_versions_are_offered_again(source: DirectorySource) -> None:
    events = Events(source)
    (source.root / "f").write_bytes(b"1")
    ev = await events.next()
    assert source.backlog().events == 0
    await source.done(ev, Outcome.FAILED)
    assert source.backlog().events == 1  # marked again, after a delay


async def test_a_missing_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"source\.path"):
        await DirectorySource(FsSourceSettings(path=tmp_path / "absent")).start()


async def test_a_shrunk_state_goes_only_once_it_stays(source: DirectorySource) -> None:
    """Truncate-then-rewrite passes through a short state that is no version:
    a smaller state is held back until it has been there settle_seconds."""
    events = Events(source)
    path = source.root / "ckpt.bin"
    path.write_bytes(b"x" * 5000)
    assert (await events.next()).size == 5000
    with path.open("r+b") as f:
        f.truncate(100)
    assert await events.quiet(0.2) == []  # shrank: held back for settle_seconds
    ev = await events.next()
    assert (ev.size, ev.event_time_ns) == (100, os.stat(path).st_ctime_ns)


async def test_a_transient_state_is_never_handed_out(source: DirectorySource) -> None:
    """The rule itself, on the states seen on Linux 6.x: an empty file under
    the previous version's ctime, then the rewritten one."""
    full = ChangeEvent("fs", "local", "k", Kind.CREATED, 1_000, 5000, observed=1)
    torn = ChangeEvent("fs", "local", "k", Kind.CREATED, 1_000, 0, observed=2)
    rewritten = ChangeEvent("fs", "local", "k", Kind.CREATED, 2_000, 5000, observed=3)
    assert not source._transient(full)
    assert source._transient(torn)  # looked at again after settle_seconds
    assert not source._transient(rewritten)  # by then the write had finished
    assert source._transient(torn)  # a new suspect: must stay ...
    assert not source._transient(torn)  # ... and it did: a real (empty) version
