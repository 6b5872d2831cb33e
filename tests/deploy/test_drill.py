"""``replicator drill`` against a store written by a real ``replicator
backfill`` of a directory: restores and verifies, reports the RTO, exports
it as a node-exporter textfile, and fails (exit 1) on a corrupt chunk
without erasing the last success."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from replicator._native import ChunkerParams
from replicator.cli import main
from replicator.drill import DrillReport, _Run
from replicator.restore import NoProgress, Selection, restore
from replicator.store.backends import FsBackend
from tests.deploy.conftest import unavailable
from tests.deploy.metric_names import families
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import SECOND, T0, StoreBuilder, run_cli, write_config
from tests.services.process import ServiceError
from tests.services.prometheus import PushgatewayServer

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
FILES = 48


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _write_config(root: Path, source: Path, peer: Path) -> Path:
    path = root / "replicator.toml"
    path.write_text(
        f'[source]\ntype = "fs"\npath = "{source}"\nbucket = "src"\n\n'
        f'[[destinations]]\nname = "dr-eu"\ntype = "fs"\npath = "{peer}"\n\n'
        f'[store]\ncache_dir = "{root / "cache"}"\n'
    )
    return path


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(config, peer root, source bytes): a real backfill of a checkpoint-
    like tree (a few large shards, many small files, an empty one)."""
    root = tmp_path_factory.mktemp("drill")
    source, peer = root / "source", root / "peer"
    rng = random.Random(7)
    total = 0
    for i in range(FILES):
        size = 4 * MiB if i % 8 == 0 else rng.randrange(0, 300_000)
        path = source / f"shard-{i // 10}" / f"part {i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        total += size
    config = _write_config(root, source, peer)
    code, out, err = _cli("backfill", "--config", str(config), "--json")
    assert code == 0, out + err
    return config, peer, total


def test_full_drill_restores_verifies_and_exports(
    backfilled: tuple[Path, Path, int], tmp_path: Path
) -> None:
    config, _peer, total = backfilled
    scratch, textfile = tmp_path / "scratch", tmp_path / "replicator_drill_dr-eu.prom"
    scratch.mkdir()
    args = ["--config", str(config), "--destination", "dr-eu", "--scratch", str(scratch)]
    code, out, err = _cli("drill", *args, "--textfile", str(textfile), "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"] and report["problems"] == []
    assert report["objects"] == FILES and report["bytes"] == total
    assert report["checked_files"] == FILES and report["checked_bytes"] == total
    assert list(scratch.iterdir()) == [], "scratch space must be cleaned up"
    print(
        f"drill RTO: {report['rto_seconds']:.3f} s to restore and verify {FILES} objects, "
        f"{total / MiB:.1f} MiB from an fs peer ({total / MiB / report['rto_seconds']:.0f} "
        f"MiB/s); read-back check {report['check_seconds']:.3f} s"
    )
    samples = _textfile(textfile)
    assert samples["replicator_drill_success"] == 1.0
    assert samples["replicator_drill_restored_bytes"] == total
    # The JSON report rounds to microseconds; the textfile keeps every digit.
    assert samples["replicator_drill_rto_seconds"] == pytest.approx(report["rto_seconds"], abs=1e-5)
    assert samples["replicator_drill_last_success_timestamp_seconds"] == report["started_at"]
    assert os.stat(textfile).st_mode & 0o777 == 0o644


def _textfile(path: Path) -> dict[str, float]:
    """name -> value of the destination dr-eu, parsed by prometheus_client;
    every family must be one deploy/metrics.txt lists for the drill."""
    listed = {f.name for f in families() if f.exporter == "drill"}
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.name in listed, family.name
        for sample in family.samples:
            assert sample.labels == {"destination": "dr-eu"}
            out[sample.name] = sample.value
    return out


def test_sample_is_seeded_and_never_empty(backfilled: tuple[Path, Path, int]) -> None:
    config, _peer, _total = backfilled
    base = ["drill", "--config", str(config), "--destination", "dr-eu", "--json"]
    runs = [json.loads(_cli(*base, "--sample", "0.25", "--seed", "11")[1]) for _ in range(2)]
    assert runs[0]["selected"] == runs[1]["selected"] and 0 < runs[0]["selected"] < FILES
    assert runs[0]["bytes"] == runs[1]["bytes"] and runs[0]["ok"]
    assert runs[0]["keys"] == FILES
    tiny = json.loads(_cli(*base, "--sample", "0.000001", "--seed", "11")[1])
    assert tiny["ok"] and tiny["selected"] == 1 and tiny["objects"] == 1
    print(
        f"sample 0.25: {runs[0]['selected']} of {FILES} keys, RTO {runs[0]['rto_seconds']:.3f} s, "
        f"estimated for every key {runs[0]['estimated_full_rto_seconds']:.3f} s"
    )


def test_corrupt_chunk_fails_and_keeps_last_success(
    backfilled: tuple[Path, Path, int], tmp_path: Path
) -> None:
    _config, peer, _total = backfilled
    # A copy of the peer, so the other tests keep a clean one.
    damaged = tmp_path / "peer"
    shutil.copytree(peer, damaged)
    bad_config = _write_config(tmp_path, tmp_path / "unused", damaged)
    textfile = tmp_path / "drill.prom"
    args = ["drill", "--config", str(bad_config), "--destination", "dr-eu"]
    code, out, err = _cli(*args, "--textfile", str(textfile))
    assert code == 0, out + err
    before = _textfile(textfile)

    pack = max((damaged / "packs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.write_bytes(bytes(data))

    code, out, err = _cli(*args, "--textfile", str(textfile))
    assert code == 1, out + err
    assert "BLAKE3 mismatch" in err and f"pack={pack.name}" in err
    assert "FAILED" in out
    after = _textfile(textfile)
    assert after["replicator_drill_success"] == 0.0
    assert (
        after["replicator_drill_last_success_timestamp_seconds"]
        == (before["replicator_drill_last_success_timestamp_seconds"])
    )
    assert after["replicator_drill_rto_seconds"] == before["replicator_drill_rto_seconds"]
    assert (
        after["replicator_drill_last_run_timestamp_seconds"]
        > before["replicator_drill_last_run_timestamp_seconds"]
    )


async def test_nothing_live_is_a_failure(tmp_path: Path) -> None:
    # A store whose only key was removed: a drill that restores nothing
    # proves nothing, so it must not say ok.
    peer = tmp_path / "peer"
    builder = StoreBuilder(FsBackend(peer))
    await builder.init()
    await builder.put("gone.bin", b"x" * 1000, 1_700_000_000_000_000_000)
    await builder.remove("gone.bin", 1_700_000_001_000_000_000)
    config = _write_config(tmp_path, tmp_path / "unused", peer)
    for sample in ("1", "0.5"):
        args = ["drill", "--config", str(config), "--destination", "dr-eu", "--sample", sample]
        code, out, err = await _acli(*args)
        assert code == 1, out + err
        assert "nothing to drill" in err


async def _acli(*args: str) -> tuple[int, str, str]:
    # The command runs its own event loop: not inside this test's.
    return await asyncio.to_thread(_cli, *args)


def test_operator_errors_exit_2(backfilled: tuple[Path, Path, int], tmp_path: Path) -> None:
    config, _peer, _total = backfilled
    code, _out, err = _cli("drill", "--config", str(config), "--destination", "nope")
    assert code == 2 and "no destination named 'nope'" in err
    missing = tmp_path / "missing"
    base = ["drill", "--config", str(config), "--destination", "dr-eu"]
    code, _out, err = _cli(*base, "--scratch", str(missing))
    assert code == 2 and f"--scratch {missing}" in err
    code, _out, err = _cli(*base, "--textfile", str(missing / "x.prom"))
    assert code == 2 and "--textfile" in err
    assert "Traceback" not in err


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[PushgatewayServer]:
    try:
        server = PushgatewayServer(tmp_path)
    except ServiceError as exc:
        unavailable(str(exc))
    yield server
    server.stop()


def _pushed(gateway: PushgatewayServer) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(gateway.metrics()):
        for sample in family.samples:
            if sample.labels.get("job") == "replicator-drill":
                assert sample.labels["destination"] == "dr-eu"
                out[sample.name] = sample.value
    return out


def test_pushgateway_keeps_last_success_after_a_failure(
    backfilled: tuple[Path, Path, int], tmp_path: Path, pushgateway: PushgatewayServer
) -> None:
    config, peer, _total = backfilled
    args = ["drill", "--config", str(config), "--destination", "dr-eu", "--sample", "0.1"]
    code, out, err = _cli(*args, "--pushgateway", pushgateway.url)
    assert code == 0, out + err
    good = _pushed(pushgateway)
    assert good["replicator_drill_success"] == 1.0 and good["replicator_drill_rto_seconds"] > 0

    # The same drill against an empty peer fails; the last success stays.
    empty = tmp_path / "empty-peer"
    shutil.copytree(peer, empty, ignore=shutil.ignore_patterns("manifests", "segments"))
    bad_config = _write_config(tmp_path, tmp_path / "unused", empty)
    bad = ["drill", "--config", str(bad_config), "--destination", "dr-eu"]
    code, out, err = _cli(*bad, "--pushgateway", pushgateway.url)
    assert code == 1 and "no manifests" in err
    after = _pushed(pushgateway)
    assert after["replicator_drill_success"] == 0.0
    for kept in ("replicator_drill_rto_seconds", "replicator_drill_last_success_timestamp_seconds"):
        assert after[kept] == good[kept], kept

    code, out, err = _cli(*bad, "--pushgateway", "http://127.0.0.1:1")
    assert code == 1 and "--pushgateway http://127.0.0.1:1: cannot push" in err
    code, out, err = _cli(*bad, "--pushgateway", "ftp://x")
    assert code == 2 and "not an http:// or https:// URL" in err


async def test_drill_on_every_backend(store: StoreUnderTest, tmp_path: Path) -> None:
    """The same drill over the filesystem and both S3 servers (moto,
    SeaweedFS), after a real backfill into that peer."""
    source = tmp_path / "source"
    rng = random.Random(3)
    sizes = [0, 1, 70_000, 3 * MiB, 5 * MiB + 17]
    for i, size in enumerate(sizes):
        path = source / f"dir {i}" / f"obj+{i}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(rng.randbytes(size))
    config = write_config(tmp_path / "r.toml", store, ChunkerParams(16384, 65536, 262144), source)
    result = await run_cli(main, ["backfill", "--config", str(config)], store)
    assert result.exit_code == 0, result.stdout + result.stderr
    drill = ["drill", "--config", str(config), "--destination", "peer", "--json"]
    result = await run_cli(main, drill, store)
    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.json()
    assert report["objects"] == len(sizes) and report["bytes"] == sum(sizes)
    assert report["checked_bytes"] == sum(sizes)
    print(
        f"drill from {store.kind}: {report['objects']} objects, {sum(sizes) / MiB:.1f} MiB, "
        f"RTO {report['rto_seconds']:.3f} s"
    )


async def test_read_back_check(tmp_path: Path) -> None:
    """The check after the restore: a file may be any stored version of its
    key (the daemon stores newer ones while a drill runs), but bytes that
    match no version, and files that belong to no key, are problems."""
    backend = FsBackend(tmp_path / "peer")
    builder = StoreBuilder(backend)
    await builder.init()
    await builder.put("a.bin", b"old" * 1000, T0)
    await builder.put("a.bin", b"new" * 1000, T0 + SECOND)
    await builder.put("b.bin", b"bbb" * 1000, T0)
    scratch = tmp_path / "scratch"
    # As if a.bin's newer version arrived after the drill restored the older one.
    summary = await restore(backend, Selection("src", "", False, T0), scratch)
    assert summary.ok and (scratch / "a.bin").read_bytes() == b"old" * 1000

    clean = DrillReport("p", 1.0, 0)
    await _Run(backend, "src", scratch, clean, 1, NoProgress()).check_tree()
    assert clean.problems == [] and clean.checked_files == 2

    (scratch / "b.bin").write_bytes(b"x" * 3000)  # same length, other bytes
    (scratch / "stray").write_bytes(b"")
    damaged = DrillReport("p", 1.0, 0)
    await _Run(backend, "src", scratch, damaged, 1, NoProgress()).check_tree()
    messages = sorted(p.message for p in damaged.problems)
    assert messages == [
        "1 files in the restored tree match no restored key",
        "restored file (3000 bytes) matches no version's length and BLAKE3",
    ]
    assert [p.key for p in damaged.problems if p.key] == ["b.bin"]
    await backend.close()
