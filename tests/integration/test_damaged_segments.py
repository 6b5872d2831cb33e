"""A damaged format 3 segment is named by every reader that misses what it
held: ``restore`` (``--key``, a whole prefix, ``--at``), ``verify``, ``drill``
and ``repair``, each through the command line on every backend (fs, moto,
SeaweedFS), one line per problem and exit 1 where work could not be done.

The peer is written by ``replicator backfill`` (two runs: the second one's
group commits, one or two segments, hold a new version of ``a`` and the
first of ``c``); then those segments are damaged in place: garbage over all
of each (its header is unreadable: what it held is unknown) or one byte
flipped in each one's body (its header still lists its manifests)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from replicator.commands.backfill import backfill
from replicator.commands.drill import drill_command
from replicator.commands.restore import restore_command
from replicator.commands.verify import verify_command
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import CliResult, run_cli, tree, write_config
from tests.integration.test_format3 import segment_names

pytestmark = pytest.mark.integration

OLD_A, NEW_A, B, C = b"a, first" * 50, b"a, second" * 60, b"b" * 700, b"c" * 900


async def _damaged_peer(store: StoreUnderTest, tmp_path: Path) -> tuple[list[str], list[str], str]:
    """(base arguments, the second run's segments, an --at between the runs)."""
    src = tmp_path / "source"
    src.mkdir()
    (src / "a").write_bytes(OLD_A)
    (src / "b").write_bytes(B)
    config = write_config(tmp_path / "replicator.toml", store, source=src, format_version=3)
    args = ["--config", str(config), "--json"]
    assert (await run_cli(backfill, args, store)).json()["errors"] == 0
    before = set(await segment_names(store.backend))
    await asyncio.sleep(0.05)
    at = f"{time.time():.6f}"
    await asyncio.sleep(0.05)
    (src / "a").write_bytes(NEW_A)
    (src / "c").write_bytes(C)
    second = (await run_cli(backfill, args, store)).json()
    assert second["errors"] == 0 and second["replicated"] == 2
    segments = sorted(set(await segment_names(store.backend)) - before)
    assert 1 <= len(segments) <= 2, segments
    return ["--config", str(config), "--destination", "peer"], segments, at


def _lines(res: CliResult, prefix: str) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith(prefix)]


def _one_each(lines: list[str], segments: list[str], start: str = "") -> None:
    """One line per damaged segment, naming it (and starting with ``start``)."""
    assert len(lines) == len(segments), lines
    for line, segment in zip(sorted(lines), sorted(segments), strict=True):
        assert line.startswith(start) and segment in line, (line, segment)
        assert "Traceback" not in line and "key=''" not in line, line


async def _restore(store: StoreUnderTest, base: list[str], out: Path, *what: str) -> CliResult:
    return await run_cli(restore_command, [*base, *what, "--to", str(out)], store)


async def test_garbage_over_a_segment_is_named_by_restore_verify_and_drill(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    base, segments, _ = await _damaged_peer(store, tmp_path)
    for segment in segments:
        await store.backend.put(segment, b"garbage, not a segment\n" * 40)

    one = await _restore(store, base, tmp_path / "c", "--key", "c")
    assert one.exit_code == 1, one.stdout + one.stderr
    _one_each(_lines(one, "error:"), segments, "error: key='c': segment ")
    assert "no manifests" not in one.stderr and "Traceback" not in one.stderr

    # a: the older version is restored, and the newer one that may be lost is named.
    older = await _restore(store, base, tmp_path / "a", "--key", "a")
    assert older.exit_code == 1 and tree(tmp_path / "a") == {"a": OLD_A}
    _one_each(_lines(older, "error:"), segments, "error: key='a': segment ")

    whole = await _restore(store, base, tmp_path / "all", "--prefix", "")
    assert whole.exit_code == 1, whole.stdout + whole.stderr
    assert tree(tmp_path / "all") == {"a": OLD_A, "b": B}, "what can be restored is"
    _one_each(_lines(whole, "error:"), segments, "error: segment ")

    checked = await run_cli(verify_command, base, store)
    assert checked.exit_code == 1
    _one_each(_lines(checked, "problem:"), segments, "problem: segment ")
    assert "which manifests it held is unknown" in checked.stderr

    drilled = await run_cli(drill_command, [*base, "--scratch", str(tmp_path)], store)
    assert drilled.exit_code == 1 and "FAILED" in drilled.stdout
    _one_each(_lines(drilled, "problem:"), segments, "problem: segment ")
    sampled = await run_cli(drill_command, [*base, "--sample", "0.5", "--seed", "1"], store)
    assert sampled.exit_code == 1
    _one_each(_lines(sampled, "problem:"), segments, "problem: segment ")
    print(f"[{store.kind}] garbage over {len(segments)} segments: restore, verify, drill exit 1")
    for res in (one, older, whole, checked, drilled):
        print("   ", *(_lines(res, "error:") + _lines(res, "problem:")))


async def test_a_segment_with_a_readable_header_names_each_lost_version(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    base, segments, at = await _damaged_peer(store, tmp_path)
    for segment in segments:
        data = bytearray(await store.backend.get(segment))
        data[-3] ^= 0x20  # in its last entry's bytes: the header still reads
        await store.backend.put(segment, bytes(data))

    older = await _restore(store, base, tmp_path / "a", "--key", "a")
    assert older.exit_code == 1 and tree(tmp_path / "a") == {"a": OLD_A}
    (line,) = _lines(older, "error:")
    assert line.startswith("error: key='a' version=") and "restored the older version" in line
    assert any(f"damaged segment {s} " in line for s in segments), line

    lost = await _restore(store, base, tmp_path / "c", "--key", "c")
    assert lost.exit_code == 1 and tree(tmp_path / "c") == {}
    (line,) = _lines(lost, "error:")
    assert line.startswith("error: key='c' version=") and line.endswith("not restored"), line

    fine = await _restore(store, base, tmp_path / "b", "--key", "b")
    assert fine.exit_code == 0 and tree(tmp_path / "b") == {"b": B}, fine.stderr
    then = await _restore(store, base, tmp_path / "then", "--prefix", "", "--at", at)
    assert then.exit_code == 0, then.stderr  # nothing of that time was in the segments
    assert tree(tmp_path / "then") == {"a": OLD_A, "b": B}

    whole = await _restore(store, base, tmp_path / "all", "--prefix", "")
    assert whole.exit_code == 1 and tree(tmp_path / "all") == {"a": OLD_A, "b": B}
    assert [line.split(" version=")[0] for line in _lines(whole, "error:")] == [
        "error: key='a'",
        "error: key='c'",
    ]
    checked = await run_cli(verify_command, base, store)
    assert checked.exit_code == 1
    _one_each(_lines(checked, "problem:"), segments, "problem: segment ")
    assert checked.stderr.count("its header lists") == len(segments)
    print(f"[{store.kind}] body of {len(segments)} segments damaged: a, c named; b, --at clean")
    for res in (older, lost, whole, checked):
        print("   ", *(_lines(res, "error:") + _lines(res, "problem:")))
