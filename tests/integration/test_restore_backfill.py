"""End to end through the product's own writer: ``replicator backfill`` of an
fs source, files changed (new mtimes) and removed, backfill again; then
``replicator restore --at`` reproduces each state byte-for-byte and
``replicator verify --deep`` is clean."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from replicator.cli import main
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import SECOND, SMALL, T0, run_cli, tree, write_config

pytestmark = pytest.mark.integration

KEYS = [
    "empty",
    "sizes/max",
    "sizes/max+1",
    "dir with space/file name.bin",
    "plus+sign/a+b.txt",
    "ünïcødé/日本語.txt",
    "a..b/c..",
    "ckpt/model.pt",
    "ckpt/tokenizer.json",
]


def write_state(root: Path, files: dict[str, bytes], mtime_ns: int) -> None:
    for key, data in files.items():
        path = root.joinpath(*key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(mtime_ns, mtime_ns))


def first_state(rng: random.Random) -> dict[str, bytes]:
    sizes = {"empty": 0, "sizes/max": SMALL.max_size, "sizes/max+1": SMALL.max_size + 1}
    return {k: rng.randbytes(sizes.get(k, rng.randrange(1, 40_000))) for k in KEYS}


def remove(root: Path, key: str) -> None:
    root.joinpath(*key.split("/")).unlink()


async def backfill(store: StoreUnderTest, config: Path) -> None:
    # Removals here are deliberate (a few keys of a small tree): past the guard.
    args = ["backfill", "--config", str(config), "--json", "--allow-deletes"]
    res = await run_cli(main, args, store)
    assert res.exit_code == 0, res.stdout + res.stderr


async def two_backfills(
    store: StoreUnderTest, config: Path, src: Path
) -> list[tuple[int | None, dict[str, bytes]]]:
    """Backfill a first state; change two files and remove one; backfill
    again. Returns (time for --at or None for "now", expected tree).

    Event times are the files' ctimes (the real clock; mtimes are only
    metadata), so the --at times are read from the clock between the steps,
    with a pause longer than the kernel's coarse timestamp tick."""
    rng = random.Random(5)
    v1 = first_state(rng)
    write_state(src, v1, T0)
    await backfill(store, config)
    t1 = await _between_steps()
    model = bytearray(v1["ckpt/model.pt"])
    model[100:600] = rng.randbytes(500)  # a checkpoint save that changed one region
    changed = {"ckpt/model.pt": bytes(model), "plus+sign/a+b.txt": b"rewritten"}
    write_state(src, changed, T0 + 100 * SECOND)
    await backfill(store, config)
    t2 = await _between_steps()
    remove(src, "sizes/max+1")
    await backfill(store, config)
    v2 = v1 | changed
    final = {k: v for k, v in v2.items() if k != "sizes/max+1"}
    return [(t1, v1), (t2, v2), (None, final)]


async def _between_steps() -> int:
    await asyncio.sleep(0.05)
    now = time.time_ns()
    await asyncio.sleep(0.05)
    return now


async def test_backfilled_versions_restore_byte_for_byte(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    src = tmp_path / "source"
    config = write_config(tmp_path / "replicator.toml", store, source=src)
    states = await two_backfills(store, config, src)
    compared = 0
    base = ["restore", "--config", str(config), "--destination", "peer", "--prefix", ""]
    for i, (t, expected) in enumerate(states):
        out = tmp_path / f"out-{i}"
        at = [] if t is None else ["--at", f"{t // SECOND}.{t % SECOND:09d}"]
        res = await run_cli(main, [*base, "--to", str(out), *at, "--json"], store)
        assert res.exit_code == 0, res.stderr
        assert tree(out) == expected
        compared += sum(map(len, expected.values()))
    assert res.json()["removed"] == ["sizes/max+1"]

    verify = ["verify", "--config", str(config), "--destination", "peer", "--deep", "--json"]
    res = await run_cli(main, verify, store)
    assert res.exit_code == 0, res.stdout
    report = res.json()
    assert report["manifests"] == len(KEYS) + 2 + 1  # two changed files, one tombstone
    print(
        f"[{store.kind}] backfill x2 -> {report['manifests']} manifests; 3 restores compared "
        f"{compared} bytes; deep verify re-hashed {report['bytes_rehashed']} bytes, clean"
    )
