"""Verify and restore find damage (RELIABILITY items 10 and 11), over every
backend: a flipped bit is named by deep verify and by restore (exit 1, no
file at the final path); a deleted pack by structural verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator.commands.restore import restore_command
from replicator.commands.verify import verify_command
from replicator.store.format import Manifest, PackIndex, PackRun, index_key, pack_key
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import (
    CliResult,
    StoreBuilder,
    build_corpus,
    latest,
    manifests_with_chunk,
    run_cli,
    tree,
    write_config,
)

pytestmark = pytest.mark.integration


async def verify(store: StoreUnderTest, config: Path, *args: str) -> CliResult:
    base = ["--config", str(config), "--destination", "peer", "--json"]
    return await run_cli(verify_command, [*base, *args], store)


async def restore_key(store: StoreUnderTest, config: Path, key: str, out: Path) -> CliResult:
    args = ["--config", str(config), "--destination", "peer", "--key", key, "--to", str(out)]
    return await run_cli(restore_command, [*args, "--json"], store)


def named(problems: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(p["key"], p["version"]) for p in problems}


def middle_chunk(m: Manifest) -> tuple[PackRun, int, int]:
    """(run, chunk index, byte offset in the pack) of a chunk mid-object."""
    flat = [(r, i) for r in m.runs for i in range(len(r.chunks))]
    run, i = flat[len(flat) // 2]
    return run, i, run.offset + sum(c.stored_length for c in run.chunks[:i])


@pytest.fixture
async def corpus_store(store: StoreUnderTest, tmp_path: Path) -> tuple[StoreBuilder, Path]:
    builder = StoreBuilder(store.backend)
    await build_corpus(builder)
    return builder, write_config(tmp_path / "replicator.toml", store)


async def test_a_clean_store_verifies(
    store: StoreUnderTest, corpus_store: tuple[StoreBuilder, Path]
) -> None:
    builder, config = corpus_store
    live = [m for m in builder.manifests if not m.removed]
    # An unreferenced pack (a writer that died before its manifest) is info.
    await store.backend.put(pack_key(b"\xee" * 32), b"orphan")
    await store.backend.put(index_key(b"\xee" * 32), PackIndex(b"\xee" * 32, 6, ()).to_bytes())
    res = await verify(store, config)
    assert res.exit_code == 0, res.stdout
    report = res.json()
    assert report["manifests"] == len(builder.manifests)
    assert report["tombstones"] == len(builder.manifests) - len(live)
    assert report["chunks"] == sum(m.chunk_count() for m in live)
    assert report["packs"] == len({p for m in live for p in m.packs()})
    assert {i["pack"] for i in report["info"]} == {"ee" * 32}
    deep = (await verify(store, config, "--deep")).json()
    assert deep["ok"] and deep["deep_checked"] == len(live)  # tombstones hold no bytes
    assert deep["bytes_rehashed"] == sum(m.identity.size for m in live)
    print(
        f"[{store.kind}] clean: {report['manifests']} manifests, {report['chunks']} chunk refs, "
        f"{report['packs']} packs, {deep['bytes_rehashed']} bytes re-hashed, 0 problems"
    )


async def test_a_flipped_bit_is_named_by_deep_verify_and_restore(
    store: StoreUnderTest, corpus_store: tuple[StoreBuilder, Path], tmp_path: Path
) -> None:
    builder, config = corpus_store
    victim = latest(builder, "ckpt/model.pt")
    run, i, pos = middle_chunk(victim)
    chunk = run.chunks[i]
    pack = bytearray(await store.backend.get(pack_key(run.pack)))
    pack[pos + chunk.stored_length // 2] ^= 0x04
    await store.backend.put(pack_key(run.pack), bytes(pack))

    structural = await verify(store, config)
    assert structural.exit_code == 0  # lengths and offsets still match: only bytes changed
    res = await verify(store, config, "--deep")
    assert res.exit_code == 1
    problems = res.json()["problems"]
    assert named(problems) == manifests_with_chunk(builder, chunk.digest)
    assert {(p["pack"], p["chunk"]) for p in problems} == {(run.pack.hex(), chunk.digest.hex())}
    assert all("BLAKE3 mismatch" in p["message"] for p in problems)

    out = tmp_path / "out"
    res = await restore_key(store, config, "ckpt/model.pt", out)
    assert res.exit_code == 1
    (err,) = res.json()["errors"]
    assert (err["key"], err["version"]) == ("ckpt/model.pt", victim.version_name)
    assert (err["pack"], err["chunk"]) == (run.pack.hex(), chunk.digest.hex())
    assert tree(out) == {}  # no file at the final path, no temporary file left
    print(
        f"[{store.kind}] flipped bit: deep verify named {len(problems)} versions, "
        f"restore exit 1, nothing written"
    )


async def test_a_deleted_pack_is_found_by_structural_verify_and_restore(
    store: StoreUnderTest, corpus_store: tuple[StoreBuilder, Path], tmp_path: Path
) -> None:
    builder, config = corpus_store
    victim = latest(builder, "sizes/many")
    run = victim.runs[len(victim.runs) // 2]
    await store.backend.delete(pack_key(run.pack))
    res = await verify(store, config)
    assert res.exit_code == 1
    problems = res.json()["problems"]
    users = {(m.identity.key, m.version_name) for m in builder.manifests if run.pack in m.packs()}
    assert named(problems) == users
    assert {p["pack"] for p in problems} == {run.pack.hex()}
    assert all("pack is missing" in p["message"] and p["chunk"] for p in problems)
    deep = await verify(store, config, "--deep")
    assert deep.exit_code == 1
    assert named(deep.json()["problems"]) == users

    out = tmp_path / "out"
    res = await restore_key(store, config, "sizes/many", out)
    assert res.exit_code == 1
    (err,) = res.json()["errors"]
    assert err["pack"] == run.pack.hex() and "missing" in err["message"]
    assert tree(out) == {}
    print(f"[{store.kind}] deleted pack: structural verify named {len(problems)} versions")


async def test_structural_verify_finds_broken_indexes_packs_and_manifests(
    store: StoreUnderTest, corpus_store: tuple[StoreBuilder, Path]
) -> None:
    builder, config = corpus_store
    a, b, c = (latest(builder, k) for k in ("dir/with space.bin", "a..b", "ünïcødé/日本語.txt"))
    # a: its pack loses its index; b: its pack is truncated; c: manifest body garbled.
    await store.backend.delete(index_key(a.runs[0].pack))
    short = await store.backend.get(pack_key(b.runs[-1].pack))
    await store.backend.put(pack_key(b.runs[-1].pack), short[: b.runs[-1].offset + 1])
    await store.backend.put(c.store_key(), c.to_bytes()[:-3])
    res = await verify(store, config)
    assert res.exit_code == 1
    problems = res.json()["problems"]
    by_key: dict[str, str] = {}
    for p in problems:
        by_key[p["key"]] = by_key.get(p["key"], "") + p["message"] + "\n"
    assert by_key.keys() == {"dir/with space.bin", "a..b", "ünïcødé/日本語.txt"}
    assert "index of pack" in by_key["dir/with space.bin"]
    assert "missing" in by_key["dir/with space.bin"]
    assert "too short" in by_key["a..b"]
    assert "not valid JSON" in by_key["ünïcødé/日本語.txt"]


async def test_deep_sample_is_seeded_and_reported(
    store: StoreUnderTest, corpus_store: tuple[StoreBuilder, Path]
) -> None:
    builder, config = corpus_store
    first = (await verify(store, config, "--sample", "0.5", "--seed", "7")).json()
    again = (await verify(store, config, "--sample", "0.5", "--seed", "7")).json()
    assert first["deep"] and first["seed"] == 7 and first["sample"] == 0.5
    assert 0 < first["deep_checked"] < len(builder.manifests)
    assert again["deep_checked"] == first["deep_checked"]
    assert again["bytes_rehashed"] == first["bytes_rehashed"]
    scoped = (await verify(store, config, "--prefix", "ckpt/")).json()
    assert scoped["manifests"] == len(
        [m for m in builder.manifests if m.identity.key == "ckpt/model.pt"]
    )
    assert scoped["info"] == []  # unreferenced packs are only judged over the whole store


async def test_a_wrong_whole_object_digest_is_caught_though_every_chunk_is_intact(
    store: StoreUnderTest, corpus_store: tuple[StoreBuilder, Path], tmp_path: Path
) -> None:
    builder, config = corpus_store
    victim = latest(builder, "sizes/many")
    body = victim.to_bytes().replace(victim.digest.hex().encode(), b"00" * 32)
    await store.backend.put(victim.store_key(), body)
    assert (await verify(store, config)).exit_code == 0  # structure is intact
    res = await verify(store, config, "--deep")
    assert res.exit_code == 1
    (problem,) = res.json()["problems"]
    assert (problem["key"], problem["version"]) == ("sizes/many", victim.version_name)
    assert "whole-object BLAKE3" in problem["message"]
    out = tmp_path / "out"
    res = await restore_key(store, config, "sizes/many", out)
    assert res.exit_code == 1
    assert "whole-object BLAKE3" in res.json()["errors"][0]["message"]
    assert tree(out) == {}
