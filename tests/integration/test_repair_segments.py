"""``replicator repair`` on a format 3 peer's damaged segments, through the
command line: the same segment from another peer replaces it (checked by
its name); a segment whose header still reads is written again from its
intact entries, from versions held elsewhere at the peer and from other
peers' manifests whose chunks are at this peer, then deleted; what cannot
be proven whole stays, named, with exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.commands.backfill import backfill
from replicator.commands.repair import repair_command
from replicator.commands.restore import restore_command
from replicator.commands.verify import verify_command
from replicator.store.backends import FsBackend
from replicator.store.segments import encode, parse
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import CliResult, run_cli, tree, write_config
from tests.integration.test_format3 import segment_names

pytestmark = pytest.mark.integration

#: The tests that edit files under the peer's root directly.
fs_only = pytest.mark.parametrize("store_kind", ["fs"], indirect=True)

FILES = {"a": b"a, first" * 50, "b": b"b" * 700}
LATER = {"a": b"a, second" * 60, "c": b"c" * 900}
THIRD = b"a, third" * 70


async def _two_runs(
    store: StoreUnderTest, tmp_path: Path, *, with_b: bool
) -> tuple[Path, list[str]]:
    """A peer "peer" (the store under test; and an fs peer "b" beside it)
    written by two backfills; the segments the second one wrote."""
    src = tmp_path / "source"
    src.mkdir()
    for name, data in FILES.items():
        (src / name).write_bytes(data)
    config = write_config(tmp_path / "replicator.toml", store, source=src, format_version=3)
    if with_b:
        text = config.read_text().replace(
            "\n[chunking]",
            f'\n[[destinations]]\nname = "b"\ntype = "fs"\npath = "{tmp_path / "b"}"\n\n[chunking]',
        )
        config.write_text(text)
    args = ["--config", str(config), "--json"]
    assert (await run_cli(backfill, args, store)).json()["errors"] == 0
    before = set(await segment_names(store.backend))
    for name, data in LATER.items():
        (src / name).write_bytes(data)
    assert (await run_cli(backfill, args, store)).json()["errors"] == 0
    return config, sorted(set(await segment_names(store.backend)) - before)


async def _repair(store: StoreUnderTest, config: Path) -> CliResult:
    return await run_cli(repair_command, ["--config", str(config), "--destination", "peer"], store)


async def _restored(store: StoreUnderTest, config: Path, out: Path) -> tuple[int, dict[str, bytes]]:
    args = ["--config", str(config), "--destination", "peer", "--prefix", "", "--to", str(out)]
    res = await run_cli(restore_command, args, store)
    return res.exit_code, tree(out)


async def test_the_same_segment_from_another_peer_replaces_a_garbled_one(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    config, segments = await _two_runs(store, tmp_path, with_b=True)
    at_b = FsBackend(tmp_path / "b", "b")
    shared = [s for s in segments if await at_b.head(s) is not None]
    assert shared, "both peers got the same group commits"
    for segment in shared:
        await store.backend.put(segment, b"garbage" * 99)
    res = await _repair(store, config)
    assert res.exit_code == 0, res.stdout + res.stderr
    for segment in shared:
        assert f"segment {segment} (its bytes do not hash to its name): replaced by the " in (
            res.stdout
        )
        parse(await store.backend.get(segment), segment)  # whole again, by its name
    assert await _restored(store, config, tmp_path / "out") == (0, {**FILES, **LATER})
    print(f"[{store.kind}] {len(shared)} garbled segments replaced from peer b; restore clean")


def _flip_last_entry(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x20  # the last entry's bytes: the header still reads
    path.write_bytes(bytes(data))


@fs_only
async def test_intact_entries_are_written_again_and_the_rest_after_a_backfill(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    config, segments = await _two_runs(store, tmp_path, with_b=False)
    assert store.root is not None
    for segment in segments:
        _flip_last_entry(store.root / segment)
    first = await _repair(store, config)
    assert first.exit_code == 1, first.stdout + first.stderr
    unrepaired = [line for line in first.stderr.splitlines() if line.startswith("unrepaired:")]
    assert unrepaired and all("Traceback" not in line for line in unrepaired)
    assert any("lost: left in place" in line for line in unrepaired), unrepaired
    assert all((store.root / s).exists() for s in segments), "kept while anything is lost"

    # A backfill writes the source's current versions again (the held check
    # finds them missing); the next repair then finds every version held.
    again = (await run_cli(backfill, ["--config", str(config), "--json"], store)).json()
    assert again["errors"] == 0 and again["replicated"] >= 1, json.dumps(again)
    second = await _repair(store, config)
    assert second.exit_code == 0, second.stdout + second.stderr
    assert second.stdout.count(": removed: its ") == len(segments), second.stdout
    assert not any((store.root / s).exists() for s in segments)
    checked = await run_cli(
        verify_command, ["--config", str(config), "--destination", "peer"], store
    )
    assert checked.exit_code == 0, checked.stderr
    assert await _restored(store, config, tmp_path / "out") == (0, {**FILES, **LATER})
    print("first repair:", *unrepaired, "second:", second.stdout, sep="\n  ")


@fs_only
async def test_a_lost_entry_is_borrowed_from_another_peer_whose_chunks_are_here(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    config, segments = await _two_runs(store, tmp_path, with_b=True)
    assert store.root is not None
    b = tmp_path / "b"
    for segment in segments:
        # Peer b keeps the same manifests, one segment each (other names).
        data = (b / segment).read_bytes()
        header = parse(data, segment)
        for e in header.entries:
            one = encode("src", [(e.key, e.version_name, data[e.offset : e.offset + e.length])])
            (b / one.name).parent.mkdir(parents=True, exist_ok=True)
            (b / one.name).write_bytes(one.data)
        (b / segment).unlink()
        _flip_last_entry(store.root / segment)
    res = await _repair(store, config)
    assert res.exit_code == 0, res.stdout + res.stderr
    # Its intact entry and the one borrowed are all it held: its bytes again.
    assert res.stdout.count("rewritten in place, its bytes whole again") == len(segments)
    assert "1 from its intact entries, 1 from peers b" in res.stdout, res.stdout
    assert await _restored(store, config, tmp_path / "out") == (0, {**FILES, **LATER})
    print(res.stdout)


async def test_a_segment_of_unknown_content_is_left_until_the_operator_discards_it(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    config, segments = await _two_runs(store, tmp_path, with_b=False)
    for segment in segments:
        await store.backend.put(segment, b"garbage" * 99)
    res = await _repair(store, config)
    assert res.exit_code == 1
    lines = [line for line in res.stderr.splitlines() if line.startswith("unrepaired: segment")]
    assert len(lines) == len(segments) and all("its header is unreadable" in x for x in lines)
    assert "--discard-damaged-segments" in lines[0] and "problem left" not in res.stderr
    assert all([await store.backend.head(s) is not None for s in segments]), "left in place"

    # The operator's way out: the source's current versions written again
    # (the writers' header table forgot the segment, so the held check
    # reads it, cannot, and finds them missing), then the segment discarded.
    # (A group commit of the very manifests it held would have its name, and
    # the writer would replace the damaged bytes: a third version of a makes
    # this one another.)
    (tmp_path / "source" / "a").write_bytes(THIRD)
    again = (await run_cli(backfill, ["--config", str(config), "--json"], store)).json()
    assert again["errors"] == 0 and again["replicated"] == 2, json.dumps(again)
    args = ["--config", str(config), "--destination", "peer", "--discard-damaged-segments"]
    discarded = await run_cli(repair_command, args, store)
    assert discarded.exit_code == 0, discarded.stdout + discarded.stderr
    rewritten = 0
    for segment in segments:
        if await store.backend.head(segment) is not None:
            parse(await store.backend.get(segment), segment)  # its own bytes again
            rewritten += 1
    deleted = discarded.stdout.count("deleted (--discard-damaged-segments)")
    assert deleted >= 1 and deleted + rewritten == len(segments), discarded.stdout
    assert await _restored(store, config, tmp_path / "out") == (0, {**FILES, **LATER, "a": THIRD})
    print(f"[{store.kind}] {rewritten} rewritten by the backfill, {deleted} discarded")
    print(*lines, discarded.stdout, sep="\n")
