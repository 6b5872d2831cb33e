"""An unchanged re-run on a format 3 peer: the held check and the removal plan
answered from the header table's heads (store/segment_heads.py), a table of
an older layout rebuilt, and the same answers as the format 2 layout and as
the sorted-merge removal plan."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, blake3_digest
from replicator.origins import ObjectVersion
from replicator.origins.fs import FsOrigin
from replicator.pipeline.compare import key_bytes, peer_keys
from replicator.pipeline.counting import CountingBackend
from replicator.pipeline.manifests import tombstone
from replicator.pipeline.reconcile import Held, held_many, identity_of, newest_at_peer
from replicator.pipeline.removals import RemovalPlan, plan_removals, plan_removals_of
from replicator.sources.listing import ListedKeys
from replicator.store.backends import FsBackend
from replicator.store.format import ChunkRef, Manifest, PackRun, SourceIdentity, StoreConfig
from replicator.store.manifest_store import ManifestStore, ObjectManifests, entry_of_ref
from replicator.store.segment_cache import SCHEMA_VERSION, HeaderTable
from replicator.store.segment_store import segment_store

PARAMS = ChunkerParams(256, 1024, 4096)
V3 = StoreConfig(PARAMS, version=3)
ORIGIN = FsOrigin(Path("/nonexistent"), "src")
#: Keys whose escaped names sort differently from their bytes, a non-UTF-8
#: file name, and one long enough to be split into several name segments.
KEYS = ["a b", "a!", "a/b", "a\udc80", "é", "z" * 300, "zz", "dir/x", "dir/y", "k"]


def version(key: str, t: int = 1_000, **kw: int | None) -> ObjectVersion:
    return ObjectVersion(key, 3, t, mtime_ns=kw.get("mtime", 7), inode=kw.get("inode", 9))


def manifest(obj: ObjectVersion, observed: int = 0) -> Manifest:
    ident = identity_of(ORIGIN, obj, blake3_digest(b"abc").hex(), observed)
    run = PackRun(b"\x01" * 32, 0, (ChunkRef(blake3_digest(b"abc"), 3, 3),))
    return Manifest(ident, False, blake3_digest(b"abc"), PARAMS, (run,))


def removal(key: str, t: int) -> Manifest:
    return tombstone(SourceIdentity("fs", "src", key, "", "", 0, t), PARAMS)


async def _listing(keys: Iterable[str]) -> AsyncIterator[ObjectVersion]:
    for k in sorted(keys, key=key_bytes):
        yield version(k)


def stores(tmp_path: Path) -> dict[str, ManifestStore]:
    return {
        "v2": ObjectManifests(FsBackend(tmp_path / "v2", "peer")),
        "v3": segment_store(FsBackend(tmp_path / "v3", "peer"), V3, tmp_path / "v3.sqlite"),
    }


async def test_a_warm_held_check_reads_no_segment(tmp_path: Path) -> None:
    counting = CountingBackend(FsBackend(tmp_path, "peer"))
    store = segment_store(counting, V3, tmp_path / "table.sqlite")
    objs = [version(k) for k in KEYS]
    assert await store.put_many([manifest(o) for o in objs]) == [True] * len(objs)
    counting.counts.clear()
    changed = [version(k, mtime=8) for k in KEYS]  # same ctime and size: a put-back mtime
    answers = await held_many(store, ORIGIN, objs + changed)
    assert answers == [Held(True)] * len(objs) + [Held(False, 1)] * len(objs)
    print(f"held check of {2 * len(objs)} versions: requests {dict(counting.counts)}")
    assert counting.counts["get"] == 0, "the writer recorded every head: nothing is read"


async def test_another_writers_heads_are_read_once_then_kept(tmp_path: Path) -> None:
    objs = [version(k) for k in KEYS]
    await segment_store(FsBackend(tmp_path, "writer"), V3).put_many([manifest(o) for o in objs])
    counting = CountingBackend(FsBackend(tmp_path, "reader"))  # its own, empty table
    reader = segment_store(counting, V3, tmp_path / "reader.sqlite")
    assert await held_many(reader, ORIGIN, objs) == [Held(True)] * len(objs)
    first = counting.counts["get"]
    counting.counts.clear()
    assert await held_many(reader, ORIGIN, objs) == [Held(True)] * len(objs)
    print(f"cold held check: {first} reads; warm: {counting.counts['get']}")
    assert first > 0 and counting.counts["get"] == 0


def test_a_table_of_the_older_layout_is_rebuilt_not_read(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE seg_entries (place TEXT NOT NULL, segment TEXT NOT NULL, offset INTEGER,"
        " length INTEGER, digest BLOB, bucket BLOB, key BLOB, PRIMARY KEY (place, segment));"
        "INSERT INTO seg_entries VALUES ('src/k/1', 'segments/x', 0, 1, x'00', x'00', x'00');"
        "CREATE TABLE seg_files (name TEXT PRIMARY KEY, size INTEGER, gen INTEGER);"
        "INSERT INTO seg_files VALUES ('segments/x', 1, 1);"
    )
    old.commit()
    old.close()
    table = HeaderTable(path, V3.to_bytes())
    try:
        assert table.segments("") == [], "nothing of the old layout is trusted"
        assert table.heads_between("src", [("k", "")]) == [[]]
    finally:
        table.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


@pytest.mark.parametrize(
    "change",
    [{}, {"mtime": None}, {"inode": None}, {"mtime": 8}, {"inode": 10}, {"t": 999}, {"size": 4}],
)
async def test_the_held_check_is_the_same_in_both_layouts(
    tmp_path: Path, change: dict[str, int | None]
) -> None:
    recorded = version("a b", mtime=change.get("mtime", 7), inode=change.get("inode", 9))
    if "size" in change or "t" in change:
        recorded = ObjectVersion("a b", change.get("size") or 3, change.get("t") or 1_000, "", "")
    listed = [version("a b"), version("a b", t=999), version("missing")]
    answers = {}
    for name, store in stores(tmp_path).items():
        await store.put_many([manifest(recorded, observed=4), removal("a b", 1_000)])
        answers[name] = await held_many(store, ORIGIN, listed)
    print(f"recorded {change or 'as listed'}: {answers['v3']}")
    assert answers["v2"] == answers["v3"]


async def test_both_removal_plans_agree_in_both_layouts(tmp_path: Path) -> None:
    listed = ["a b", "a/b", "k", "new"]
    tombstoned = "a!"
    for name, store in stores(tmp_path).items():
        await store.put_many([manifest(version(k)) for k in KEYS])
        await store.put_many([removal(tombstoned, 2_000)])
        plans: list[RemovalPlan] = [
            await plan_removals(store, name, _listing(listed), "src", "", unlisted=["dir/"]),
            await plan_removals_of(store, name, set(listed), "src", "", unlisted=["dir/"]),
        ]
        got = []
        for plan in plans:
            removals = [r async for r in plan.removals.replay()] if plan.removals else []
            got.append((plan.listed, plan.live, sorted(removals)))
            plan.discard()
        # Not listed, not tombstoned already, not under the unreadable dir/.
        gone = {k for k in KEYS if k not in listed and k != tombstoned and k[:4] != "dir/"}
        print(f"{name}: listed, live, removals = {got[1][:2]}, {len(got[1][2])} removals")
        assert got[0] == got[1]
        assert {k for k, _ in got[1][2]} == gone and got[1][1] == len(KEYS) - 1


async def test_a_format_3_peer_lists_its_newest_versions_in_key_order(tmp_path: Path) -> None:
    store = stores(tmp_path)["v3"]
    await store.put_many([manifest(version(k)) for k in KEYS])
    await store.put_many([manifest(version(k, t=2_000)) for k in KEYS[:3]])
    newest = [(k, e) async for k, e, _ in newest_at_peer(store, "src", "")]
    assert [k for k, _ in newest] == sorted(KEYS, key=key_bytes)
    assert {(k, e.version_name) for k, e in newest if e} == {
        (k, e.version_name) async for k, e in store.latest("src")
    }
    # peer_keys needs no external sort for it, and its refs read back.
    pairs = [p async for p in peer_keys(store, "src", "a")]
    assert [k for k, _ in pairs] == sorted([k for k in KEYS if k.startswith("a")], key=key_bytes)
    assert all(entry_of_ref(ref).key == k for k, ref in pairs)
    skipped = [(k, e) async for k, e, _ in newest_at_peer(store, "src", "", skip={"k"})]
    assert ("k", None) in skipped


async def test_listed_keys_spill_past_their_bound_in_key_order(tmp_path: Path) -> None:
    listed = ListedKeys(limit=3)
    listed.update(["b", "a", "c"])
    assert listed.keys == {"a", "b", "c"}
    listed.update(["d"])
    listed.update(["é"])
    assert listed.keys is None
    assert [k async for k in listed.replay()] == ["a", "b", "c", "d", "é"]
    listed.remove()
