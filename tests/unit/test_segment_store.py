"""The format 3 ManifestStore on a real directory peer: one segment per group
commit, answers from the header table, replays that re-batch, corruption and
conflicts named by segment. (The shared contract is tests/unit/test_manifest_store.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator._native import ChunkerParams, blake3_digest
from replicator.cli import main
from replicator.errors import IntegrityError, NotFoundError, StoreError
from replicator.pipeline.counting import CountingBackend
from replicator.store import segment_store as segment_store_module
from replicator.store.backends import FsBackend
from replicator.store.format import ChunkRef, Manifest, PackRun, SourceIdentity, StoreConfig
from replicator.store.index_cache import segment_cache_path
from replicator.store.peer import Peer
from replicator.store.segment_compact import compact
from replicator.store.segment_store import SegmentStore, segment_store
from replicator.store.segments import encode

PARAMS = ChunkerParams(256, 1024, 4096)
V3 = StoreConfig(PARAMS, version=3)


def manifest(key: str, t: int = 1, *, bucket: str = "bkt", pack: bytes = b"\x01" * 32) -> Manifest:
    ident = SourceIdentity("src", bucket, key, "", "", 3, t)
    run = PackRun(pack, 0, (ChunkRef(blake3_digest(b"abc"), 3, 3),))
    return Manifest(ident, False, blake3_digest(b"abc"), PARAMS, (run,))


def files_under(root: Path) -> list[str]:
    return sorted(
        str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs if f != "config"
    )


async def test_a_group_commit_is_one_segment_and_no_directory_per_key(tmp_path: Path) -> None:
    counting = CountingBackend(FsBackend(tmp_path, "peer"))
    store = segment_store(counting, V3)
    answers = await store.put_many([manifest(f"dir/k{i:03d}") for i in range(300)])
    assert answers == [True] * 300
    (name,) = files_under(tmp_path)
    assert name.startswith("segments/bkt/") and not (tmp_path / "manifests").exists()
    size = (tmp_path / name).stat().st_size
    print(f"300 manifests -> 1 segment of {size} bytes; requests {dict(counting.counts)}")
    assert counting.counts["put"] == 1
    # Already held: answered from the header table, nothing written.
    assert await store.put_many([manifest("dir/k007"), manifest("new")]) == [False, True]
    assert len(files_under(tmp_path)) == 2


async def test_twice_in_one_call_is_written_once(tmp_path: Path) -> None:
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    assert await store.put_many([manifest("a"), manifest("a"), manifest("b")]) == [
        True,
        False,
        True,
    ]
    assert [e.key async for e in store.entries()] == ["a", "b"]


async def test_big_batches_are_cut_below_the_segment_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment_store_module, "split_batches", _split_small)
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    assert await store.put_many([manifest(f"k{i}") for i in range(5)]) == [True] * 5
    assert len(files_under(tmp_path)) == 3
    assert [e.key async for e in store.entries("bkt")] == [f"k{i}" for i in range(5)]


def _split_small(items: list[tuple[str, str, bytes]]) -> list[list[tuple[str, str, bytes]]]:
    from replicator.store.segments import split_batches  # noqa: PLC0415

    return split_batches(items, limit=2 * len(items[0][2]))


async def test_a_replay_that_batches_differently_changes_no_answer(tmp_path: Path) -> None:
    """Another writer (or a crashed run) wrote the same versions in other
    segments: readers see each (key, version) once, with the same bytes."""
    ms = [manifest(k, t) for k in ("a", "b", "c") for t in (1, 2)]
    backend = FsBackend(tmp_path, "peer")
    for group in (ms[:4], ms[2:]):  # overlapping batches: c/b written twice
        seg = encode("bkt", [(m.identity.key, m.version_name, m.to_bytes()) for m in group])
        await backend.put(seg.name, seg.data)
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    listed = [(k, [e.event_time_ns for e in vs]) async for k, vs in store.list_versions("bkt")]
    assert listed == [("a", [1, 2]), ("b", [1, 2]), ("c", [1, 2])]
    found = await store.versions_at("bkt", [("b", f"{2:020d}-"), ("c", "")])
    assert [[Manifest.from_bytes(d) for _, d in f] for f in found] == [[ms[3]], ms[4:]]
    assert await store.put_many(ms) == [False] * 6
    assert await store.conflicts() == []


async def test_two_different_bytes_under_one_version_are_a_conflict(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "peer")
    one, other = manifest("k", pack=b"\x01" * 32), manifest("k", pack=b"\x02" * 32)
    assert one.version_name == other.version_name and one.to_bytes() != other.to_bytes()
    names = []
    for m in (one, other):
        seg = encode("bkt", [("k", m.version_name, m.to_bytes())])
        await backend.put(seg.name, seg.data)
        names.append(seg.name)
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    assert await store.conflicts() == [("bkt", "k", one.version_name, sorted(names))]
    (problem,) = await store.audit()
    assert (problem.key, problem.version) == ("k", one.version_name)
    assert "two different manifests under one version" in problem.message
    assert all(n in problem.message for n in names)


async def test_a_corrupt_segment_is_skipped_and_named(tmp_path: Path) -> None:
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    await store.put_many([manifest("a")])
    assert len(files_under(tmp_path)) == 1
    bad = encode("bkt", [("b", manifest("b").version_name, manifest("b").to_bytes())])
    broken = bytearray(bad.data)
    broken[-5] ^= 1  # inside the entry: the segment no longer hashes to its name
    await FsBackend(tmp_path, "x").put(bad.name, bytes(broken))
    fresh = segment_store(FsBackend(tmp_path, "peer"), V3)
    assert [e.key async for e in fresh.entries()] == ["a"]
    ((name, why),) = fresh.skipped
    assert name == bad.name and "do not hash to its name" in why
    (problem,) = await fresh.audit()
    assert problem.segment == bad.name and "do not hash" in problem.message


async def test_a_flipped_byte_in_an_entry_is_found_on_read(tmp_path: Path) -> None:
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    await store.put_many([manifest("a"), manifest("b")])
    (entry,) = [e async for e in store.entries("bkt", "b")]
    assert entry.where is not None
    segment, offset, _ = entry.where
    path = tmp_path / segment
    data = bytearray(path.read_bytes())
    data[offset + 3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"segment {segment}: entry for key 'b'"):
        await store.read(entry)


async def test_scans_page_and_see_other_writers_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment_store_module, "PAGE", 3)
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    await store.put_many([manifest(f"k{i:02d}") for i in range(10)])
    writer = segment_store(FsBackend(tmp_path, "peer"), V3)  # another peer object: own table
    await writer.put_many([manifest("k99"), manifest("k05", 2)])
    keys = [k async for k, _ in store.latest("bkt")]
    assert keys == [f"k{i:02d}" for i in range(10)] + ["k99"]
    assert [e.event_time_ns async for _, e in store.latest("bkt", "k05")] == [2]


async def test_versions_at_reads_nearby_entries_together(tmp_path: Path) -> None:
    counting = CountingBackend(FsBackend(tmp_path, "peer"))
    store = segment_store(counting, V3)
    await store.put_many([manifest(f"k{i:03d}") for i in range(200)])
    before = counting.counts["get"]
    found = await store.versions_at("bkt", [(f"k{i:03d}", "") for i in range(0, 200, 2)])
    assert all(len(f) == 1 for f in found)
    print(f"100 held checks in one segment: {counting.counts['get'] - before} ranged reads")
    assert counting.counts["get"] - before == 1


async def test_the_header_table_persists_and_reads_only_new_headers(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "peer.segments.sqlite"
    first = segment_store(FsBackend(tmp_path / "peer", "peer"), V3, cache)
    await first.put_many([manifest(f"k{i}") for i in range(50)])
    await first.put_many([manifest("z")])
    counting = CountingBackend(FsBackend(tmp_path / "peer", "peer"))
    second = segment_store(counting, V3, cache)
    assert len([e async for e in second.entries()]) == 51
    assert counting.counts.get("get", 0) == 0, "both headers came from the cache file"


async def test_a_format_3_peer_keeps_its_table_next_to_the_index_cache(tmp_path: Path) -> None:
    peer = Peer("p", FsBackend(tmp_path / "peer", "p"), V3, "fs:x", cache_dir=tmp_path / "c")
    assert isinstance(peer.manifests, SegmentStore)
    await peer.manifests.put_many([manifest("a")])
    assert segment_cache_path(tmp_path / "c", "fs:x").is_file()


async def test_an_unusable_cache_falls_back_to_a_temporary_table(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = segment_store(FsBackend(tmp_path / "peer", "p"), V3, blocker / "t.sqlite")
    assert await store.put_many([manifest("a")]) == [True]
    assert [e.key async for e in store.entries()] == ["a"]


async def test_an_entry_whose_segment_was_merged_away_is_read_where_it_went(
    tmp_path: Path,
) -> None:
    backend = FsBackend(tmp_path, "peer")
    store = segment_store(backend, V3)
    ms, c = [manifest("a"), manifest("b")], manifest("c")
    await store.put_many(ms[:1])
    (entry,) = [e async for e in store.entries()]
    assert entry.where is not None
    merged = encode("bkt", [(m.identity.key, m.version_name, m.to_bytes()) for m in ms])
    await backend.put(merged.name, merged.data)
    await backend.delete(entry.where[0])
    assert await store.read(entry) == ms[0].to_bytes()
    # Merged once more: the table still names the first merge for "b".
    again = encode("bkt", [(m.identity.key, m.version_name, m.to_bytes()) for m in [*ms, c]])
    await backend.put(again.name, again.data)
    await backend.delete(merged.name)
    (found,) = await store.versions_at("bkt", [("b", "")])
    assert [d for _, d in found] == [ms[1].to_bytes()]
    await backend.delete(again.name)
    with pytest.raises(NotFoundError):
        await store.read(entry)


async def test_compaction_merges_small_segments_and_readers_follow(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "peer")
    store = segment_store(backend, V3)
    reader = segment_store(FsBackend(tmp_path, "peer"), V3)  # another process, say
    ms = [manifest(f"k{i:02d}", t) for i in range(12) for t in (1, 2)]
    for i in range(0, len(ms), 3):  # daemon-like: one small segment per commit
        await store.put_many(ms[i : i + 3])
    await reader.put_many(ms[:2])  # held: nothing written
    listed = [e async for e in reader.entries("bkt")]
    assert len(files_under(tmp_path)) == 8 and len(listed) == 24
    assert (await compact(store, "bkt", at_least=9)).inputs == 0, "below the threshold"
    stats = await compact(store, "bkt", at_least=8)
    assert (stats.inputs, stats.outputs, stats.entries) == (8, 1, 24)
    assert len(files_under(tmp_path)) == 1
    # The reader's table still names the deleted inputs: it follows the entries.
    assert [await reader.read(e) for e in listed] == [m.to_bytes() for m in ms]
    assert [e.key async for e in reader.entries("bkt")] == [e.key for e in listed]
    assert await store.put_many(ms) == [False] * 24
    print(f"compaction: {stats}")


async def test_compaction_leaves_a_conflict_for_verify(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "peer")
    one, other = manifest("k", pack=b"\x01" * 32), manifest("k", pack=b"\x02" * 32)
    for m in (one, other, manifest("j"), manifest("l")):
        seg = encode("bkt", [(m.identity.key, m.version_name, m.to_bytes())])
        await backend.put(seg.name, seg.data)
    store = segment_store(backend, V3)
    stats = await compact(store, "bkt", at_least=2)
    assert (stats.inputs, stats.outputs) == (2, 1)  # j and l; both copies of k stay
    assert len(files_under(tmp_path)) == 3
    assert len(await store.audit()) == 1


@pytest.mark.parametrize(("value", "ok"), [("3", True), ("2", True), ("4", False), ('"3"', False)])
def test_store_format_version_is_checked_by_check_config(
    tmp_path: Path, value: str, ok: bool
) -> None:
    cfg = tmp_path / "r.toml"
    (tmp_path / "src").mkdir()
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{tmp_path / "src"}"\n\n'
        f'[[destinations]]\nname = "p"\ntype = "fs"\npath = "{tmp_path / "p"}"\n\n'
        f"[store]\nformat_version = {value}\n"
    )
    done = CliRunner().invoke(main, ["check-config", "--config", str(cfg)])
    print(value, done.exit_code, done.output.strip())
    if ok:
        assert done.exit_code == 0, done.output
    else:
        assert done.exit_code == 2 and "store.format_version" in done.output


async def test_a_damaged_cache_file_is_started_afresh(tmp_path: Path) -> None:
    cache = tmp_path / "c.segments.sqlite"
    cache.write_bytes(b"not a database" * 100)
    store = segment_store(FsBackend(tmp_path / "peer", "p"), V3, cache)
    assert await store.put_many([manifest("a")]) == [True]
    assert store.state.table.path == cache
    assert cache.read_bytes().startswith(b"SQLite format 3")


async def test_a_repeat_in_one_call_fails_with_its_first_copy(tmp_path: Path) -> None:
    (tmp_path / "segments").write_bytes(b"")  # a file where the directory goes: writes fail
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    answers = await store.put_many([manifest("a"), manifest("a")])
    assert all(isinstance(a, StoreError) for a in answers), answers
    print(answers[1])  # never "present" for work not done
