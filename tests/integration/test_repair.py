"""``replicator repair`` heals a damaged peer (issue 6, item 4), and a chunk
found damaged is never deduplicated onto again.

Real filesystem peers, the real CLI. Damage is done to the stored files
directly: a flipped bit, a truncated pack, a deleted pack."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replicator._native import ChunkerParams
from replicator.cli import main
from replicator.store.backends import FsBackend
from replicator.store.format import Manifest, pack_key
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import run_cli, write_config
from tests.integration.test_backfill import MIB, manifests_at, write_tree

pytestmark = pytest.mark.integration


def _config(tmp: Path, peers: tuple[str, ...] = ("a", "b")) -> Path:
    cfg = tmp / "replicator.toml"
    dests = "".join(
        f'[[destinations]]\nname = "{p}"\ntype = "fs"\npath = "{tmp / p}"\n\n' for p in peers
    )
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{tmp / "src"}"\n\n{dests}'
        f'[store]\ncache_dir = "{tmp / "cache"}"\npack_size = {MIB}\n\n'
        "[chunking]\nmin_size = 4096\navg_size = 16384\nmax_size = 65536\n"
    )
    return cfg


def cli(*args: str | Path) -> tuple[int, Any, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        doc = None
    return result.exit_code, doc, result.stdout + result.stderr


def packs(peer: Path) -> dict[str, str]:
    """Pack file -> SHA-256 of its current bytes."""
    files = [p for p in (peer / "packs").rglob("*") if p.is_file()]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def pack_path(peer: Path, pack: bytes) -> Path:
    return peer / "packs" / pack.hex()[:2] / pack.hex()


def versions(peer: Path) -> list[Manifest]:
    """Every manifest at a filesystem peer (the tests are synchronous: the
    CLI runs its own event loop)."""
    found = asyncio.run(manifests_at(FsBackend(peer, "x")))
    return [m for ms in found.values() for m in ms]


def damage_three_packs(peer: Path, used: list[bytes]) -> None:
    """A flipped bit, a truncation and a deletion, in three different packs."""
    flip, cut, gone = (pack_path(peer, p) for p in used[:3])
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0x10
    flip.write_bytes(bytes(data))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    gone.unlink()


def restore_all(cfg: Path, peer: str, out: Path) -> tuple[int, str]:
    code, _, text = cli("restore", "--config", cfg, "--destination", peer, "--prefix", "",
                        "--to", out)  # fmt: skip
    return code, text


def originals(tmp: Path, n: int = 3, size: int = 3 * MIB // 2) -> dict[str, bytes]:
    files = {f"ckpt/shard-{i}.bin": os.urandom(size + i) for i in range(n)}
    write_tree(tmp / "src", files)
    return files


def test_repair_heals_from_the_other_peer_when_the_source_changed(tmp_path: Path) -> None:
    files = originals(tmp_path)
    cfg = _config(tmp_path)
    assert cli("backfill", "--config", cfg)[0] == 0
    # The source moves on: none of the old chunks are there any more.
    write_tree(tmp_path / "src", {k: os.urandom(len(v)) for k, v in files.items()})
    peer_a = tmp_path / "a"
    used = sorted({p for m in versions(peer_a) for p in m.packs()})
    assert len(used) >= 3
    damage_three_packs(peer_a, used)
    damaged_files = packs(peer_a)

    code, _, text = cli("verify", "--config", cfg, "--destination", "a", "--deep")
    assert code == 1, text
    assert len(list((peer_a / "quarantine").rglob("*"))) > 0  # verify recorded the damage

    code, report, text = cli("repair", "--config", cfg, "--destination", "a", "--json")
    assert code == 0, text
    assert report["ok"] and report["unrepaired"] == [] and report["healed_from_source"] == 0
    assert report["healed_from_peers"]["b"] == report["damaged_chunks"] > 0
    assert report["problems_before"] and report["problems_after"] == []
    # Never rewritten in place: every pack file that was there is unchanged.
    after = packs(peer_a)
    assert {k: after[k] for k in damaged_files} == damaged_files
    assert len(after) > len(damaged_files)
    assert not [p for p in (peer_a / "quarantine").rglob("*") if p.is_file()]

    code, _, text = cli("verify", "--config", cfg, "--destination", "a", "--deep")
    assert code == 0, text
    code, text = restore_all(cfg, "a", tmp_path / "out")
    assert code == 0, text
    for key, data in files.items():
        assert (tmp_path / "out" / key).read_bytes() == data
    print(
        f"repair: {report['damaged_chunks']} damaged chunks in 3 packs (bit flip, truncation, "
        f"deletion) healed from peer b; {len(after) - len(damaged_files)} new packs; deep "
        f"verify clean; {len(files)} versions restored byte for byte"
    )


def test_repair_takes_good_copies_from_the_source_first(tmp_path: Path) -> None:
    files = originals(tmp_path, n=2)
    cfg = _config(tmp_path, peers=("a",))
    assert cli("backfill", "--config", cfg)[0] == 0
    used = sorted({p for m in versions(tmp_path / "a") for p in m.packs()})
    pack_path(tmp_path / "a", used[0]).unlink()
    code, report, text = cli("repair", "--config", cfg, "--destination", "a", "--json")
    assert code == 0, text
    assert report["healed_from_source"] == report["damaged_chunks"] > 0
    assert report["healed_from_peers"] == {}
    code, text = restore_all(cfg, "a", tmp_path / "out")
    assert code == 0, text
    assert {k: (tmp_path / "out" / k).read_bytes() for k in files} == files
    code, _, text = cli("repair", "--config", cfg, "--destination", "nope")
    assert code == 2 and text.strip().splitlines() == [
        "error: no destination named 'nope' (configured: a)"
    ]
    print(f"repair from the source: {report['damaged_chunks']} chunks of a deleted pack")


def test_chunks_no_copy_holds_are_named_with_the_versions_they_break(
    tmp_path: Path,
) -> None:
    files = originals(tmp_path, n=2)
    cfg = _config(tmp_path)
    assert cli("backfill", "--config", cfg)[0] == 0
    write_tree(tmp_path / "src", {k: os.urandom(len(v)) for k, v in files.items()})
    for peer in ("a", "b"):  # both peers lose all their packs
        for p in (tmp_path / peer / "packs").rglob("*"):
            if p.is_file():
                p.unlink()
    code, report, text = cli("repair", "--config", cfg, "--destination", "a", "--json")
    assert code == 1, text
    assert not report["ok"] and report["unrepaired"]
    broken = {v["key"] for d in report["unrepaired"] for v in d["versions"]}
    assert broken == set(files)
    assert all(len(d["chunk"]) == 64 and d["versions"] for d in report["unrepaired"])
    code, _, text = cli("repair", "--config", cfg, "--destination", "a")
    assert code == 1 and "unrepaired: chunk=" in text and "ckpt/shard-0.bin" in text
    print(f"unrepairable: {len(report['unrepaired'])} chunks named, breaking {sorted(broken)}")


def test_a_damaged_chunk_is_never_deduplicated_onto_again(tmp_path: Path) -> None:
    data = os.urandom(MIB // 2)
    write_tree(tmp_path / "src", {"first.bin": data})
    cfg = _config(tmp_path, peers=("a",))
    assert cli("backfill", "--config", cfg)[0] == 0
    (first,) = versions(tmp_path / "a")
    path = pack_path(tmp_path / "a", first.runs[0].pack)
    raw = bytearray(path.read_bytes())
    raw[first.runs[0].offset + 100] ^= 0x01  # inside the object's first chunk
    path.write_bytes(bytes(raw))
    assert cli("verify", "--config", cfg, "--destination", "a", "--deep")[0] == 1

    # A new object with the same content: its chunks must ship again.
    write_tree(tmp_path / "src", {"second.bin": data})
    code, summary, text = cli("backfill", "--config", cfg, "--json")
    assert code == 0, text
    assert summary["shipped_bytes"]["a"] >= first.runs[0].chunks[0].length
    out = tmp_path / "out"
    code, _, text = cli("restore", "--config", cfg, "--destination", "a", "--key", "second.bin",
                        "--to", out)  # fmt: skip
    assert code == 0, text
    assert (out / "second.bin").read_bytes() == data
    print(
        f"dedup onto a quarantined chunk refused: {summary['shipped_bytes']['a']} bytes re-shipped"
    )


async def test_repair_heals_a_peer_on_every_backend(store: StoreUnderTest, tmp_path: Path) -> None:
    """Peer "a" is the backend under test (fs, moto, SeaweedFS), peer "b" a
    filesystem; damage is done through the backend itself."""
    files = originals(tmp_path, n=3)
    small = ChunkerParams(4096, 16384, 65536)
    cfg = write_config(tmp_path / "base.toml", store, params=small, source=tmp_path / "src")
    text = cfg.read_text().replace('name = "peer"', 'name = "a"')
    # write_config's [store] table (format_version) takes the keys: one table.
    store_keys = f'[store]\ncache_dir = "{tmp_path / "cache"}"\npack_size = {MIB}\n'
    text = text.replace("[store]\n", store_keys)
    text += f'\n[[destinations]]\nname = "b"\ntype = "fs"\npath = "{tmp_path / "b"}"\n'
    cfg.write_text(text)
    assert (await run_cli(main, ["backfill", "--config", str(cfg)], store)).exit_code == 0
    write_tree(tmp_path / "src", {k: os.urandom(len(v)) for k, v in files.items()})
    backend = store.backend
    found = await manifests_at(backend)
    used = sorted({p for ms in found.values() for m in ms for p in m.packs()})
    flip, cut, gone = (pack_key(p) for p in used[:3])
    data = bytearray(await backend.get(flip))
    data[len(data) // 2] ^= 0x10
    await backend.put(flip, bytes(data))
    await backend.put(cut, (await backend.get(cut))[: len(data) // 3])
    await backend.delete(gone)

    res = await run_cli(
        main, ["repair", "--config", str(cfg), "--destination", "a", "--json"], store
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    report = res.json()
    assert report["healed_from_peers"]["b"] == report["damaged_chunks"] > 0
    deep = ["verify", "--config", str(cfg), "--destination", "a", "--deep"]
    assert (await run_cli(main, deep, store)).exit_code == 0
    out = tmp_path / "out"
    restore = ["restore", "--config", str(cfg), "--destination", "a", "--prefix", ""]
    res = await run_cli(main, [*restore, "--to", str(out)], store)
    assert res.exit_code == 0, res.stderr
    assert {k: (out / k).read_bytes() for k in files} == files
    print(f"[{store.kind}] repair healed {report['damaged_chunks']} chunks from peer b")
