"""Issue 7, continued: dead and hung S3 endpoints fail within their
timeouts, keys of any legal length replicate to a filesystem peer,
leftover temporary files are cleaned, and --json is strict JSON."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.errors import TransientStoreError
from replicator.store.backends import S3Backend, S3Credentials
from tests.integration.cli_cases import fs_config, refused, replicator

pytestmark = pytest.mark.integration

#: Dummy credentials: the client signs requests before it finds the server dead.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_EC2_METADATA_DISABLED": "1"}


@pytest.fixture
def hung_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for c in held:
        c.close()
    sock.close()


def _closed_port() -> int:
    """A port nothing listens on (a stopped server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _s3_config(tmp: Path, port: int, timeouts: str) -> Path:
    (tmp / "src").mkdir(exist_ok=True)
    (tmp / "src" / "f").write_bytes(b"data")
    extra = (
        f'[[destinations]]\nname = "far"\ntype = "s3"\nbucket = "dr"\n'
        f'endpoint_url = "http://127.0.0.1:{port}"\n{timeouts}\n'
    )
    cfg = fs_config(tmp, peers=[], cache_dir=tmp / "cache")
    cfg.write_text(cfg.read_text().replace("[store]", extra + "[store]"))
    return cfg


@pytest.mark.parametrize(
    ("server", "timeouts"),
    [
        ("stopped", ""),  # the defaults
        ("hung", ""),
        ("hung", "connect_timeout = 1\nread_timeout = 1\nmax_attempts = 2"),
    ],
)
def test_dead_or_hung_s3_peer_fails_within_its_timeouts(
    tmp_path: Path, hung_server: int, server: str, timeouts: str
) -> None:
    port = hung_server if server == "hung" else _closed_port()
    cfg = _s3_config(tmp_path, port, timeouts)
    for args in (["backfill"], ["verify", "--destination", "far"]):
        ran = replicator(*args, "--config", cfg, env=AWS_ENV, timeout=120)
        line = refused(ran, 1, "destination 'far'", "s3://dr/")
        assert "config" in line or ".replicator-probe-" in line
        print(f"{server} server ({timeouts or 'defaults'}), {args[0]}: {ran.seconds:.1f} s")


async def test_a_server_that_stops_reading_mid_upload_fails_the_put(hung_server: int) -> None:
    # 32 MiB is more than the loopback socket buffers hold: the upload stalls
    # with the server reading nothing, and the read timeout never starts.
    backend = S3Backend(
        "far",
        "dr",
        endpoint_url=f"http://127.0.0.1:{hung_server}",
        region="us-east-1",
        credentials=S3Credentials("x", "y"),
        connect_timeout=1,
        read_timeout=1,
        min_put_rate=8 * 1024 * 1024,
    )
    started = time.monotonic()
    try:
        with pytest.raises(TransientStoreError, match=r"s3://dr/packs/ab/abcd: 33554432 bytes"):
            await asyncio.wait_for(backend.put("packs/ab/abcd", os.urandom(32 << 20)), 120)
    finally:
        await backend.close()
    print(f"stalled 32 MiB put failed after {time.monotonic() - started:.1f} s (budget 6 s)")


# ----------------------------------------------------------------- long keys

LONG_NAME = "日本語のファイル名" * 4  # 36 CJK characters: 324 bytes escaped
DEEP_PATH = "/".join(f"level{i:02d}" for i in range(22)) + "/leaf.bin"


def test_keys_of_any_legal_length_replicate_to_a_filesystem_peer(tmp_path: Path) -> None:
    files = {
        LONG_NAME: os.urandom(5000),
        DEEP_PATH: os.urandom(7000),
        "short.txt": b"short",
        "deep/" + LONG_NAME + "/x": b"long directory name",
    }
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    cfg = fs_config(tmp_path, cache_dir=tmp_path / "cache")
    ran = replicator("backfill", "--config", cfg, "--json")
    assert ran.code == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["replicated"] == 4 and summary["errors"] == 0, summary
    again = json.loads(replicator("backfill", "--config", cfg, "--json").stdout)
    assert again["unchanged"] == 4 and again["removed"] == 0  # a replay writes nothing
    longest = max(len(p.name.encode()) for p in (tmp_path / "a").rglob("*"))
    print(f"longest stored name: {longest} bytes")
    assert longest <= 255
    out = tmp_path / "out"
    base: list[str | Path] = ["restore", "--config", cfg, "--destination", "a", "--to"]
    assert replicator(*base, out, "--prefix", "").code == 0
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    # --prefix and --key still select exactly the long keys.
    one = tmp_path / "one"
    ran = replicator(*base, one, "--prefix", DEEP_PATH[:250], "--json")
    assert json.loads(ran.stdout)["objects"] == 1
    assert sorted(p.name for p in one.rglob("*") if p.is_file()) == ["leaf.bin"]
    ran = replicator(*base, tmp_path / "k", "--key", LONG_NAME, "--json")
    assert json.loads(ran.stdout)["objects"] == 1
    assert replicator("verify", "--config", cfg, "--destination", "b", "--deep").code == 0


# ----------------------------------------------------------------- leftovers


def _leftover(directory: Path, name: str, age: float) -> Path:
    path = directory / f".replicator-tmp-{name}"
    path.write_bytes(b"partial")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_leftover_temporary_files_are_reported_and_removed(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.bin").write_bytes(os.urandom(100_000))
    cfg = fs_config(tmp_path, cache_dir=tmp_path / "cache")
    assert replicator("backfill", "--config", cfg).code == 0
    pack_dir = next((tmp_path / "a" / "packs").iterdir())
    other = tmp_path / "a" / "packs" / "zz"
    other.mkdir()
    old = [_leftover(pack_dir, "old1", 600), _leftover(other, "old2", 600)]
    fresh = _leftover(pack_dir, "fresh", 0)  # a live writer's, perhaps
    mine = pack_dir / ".replicator-tmpX"  # not the project's pattern
    mine.write_text("keep")
    verified = replicator("verify", "--config", cfg, "--destination", "a")
    assert verified.code == 0
    for path in old:
        assert f"leftover temporary file {path}" in verified.stdout
    assert str(fresh) not in verified.stdout
    assert replicator("backfill", "--config", cfg).code == 0
    assert not any(p.exists() for p in old)
    assert fresh.exists() and mine.exists()
    # A killed restore's temporary file in the target goes on the next restore.
    out = tmp_path / "out"
    out.mkdir()
    stale = _leftover(out, "abcd1234", 5)
    ran = replicator("restore", "--config", cfg, "--destination", "a", "--prefix", "", "--to", out)
    assert ran.code == 0 and not stale.exists() and (out / "f.bin").exists()


# ----------------------------------------------------------------- --json

_LONE_SURROGATE = re.compile(r"\\ud[89a-f][0-9a-f]{2}", re.IGNORECASE)


def _strict(stdout: str) -> dict[str, object]:
    assert not _LONE_SURROGATE.search(stdout), stdout
    data: dict[str, object] = json.loads(stdout)
    return data


def test_json_output_of_non_utf8_keys_is_strict_json(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    odd = os.fsencode(src) + b'/caf\xe9 \\ ".bin'
    with open(odd, "wb") as f:
        f.write(b"latin-1 name")
    (src / "ok.txt").write_bytes(b"ok")
    cfg = fs_config(tmp_path, cache_dir=tmp_path / "cache")
    ran = replicator("backfill", "--config", cfg, "--json")
    assert ran.code == 0, ran.stderr
    assert _strict(ran.stdout)["replicated"] == 2
    assert "backfill" not in ran.stdout.replace('"', "")  # progress stays on stderr
    os.unlink(odd)
    # A tombstone for it (one of two keys: past the mass-deletion guard's share).
    assert replicator("backfill", "--config", cfg, "--allow-deletes").code == 0
    out = tmp_path / "out"
    ran = replicator(
        "restore", "--config", cfg, "--destination", "a", "--prefix", "", "--to", out, "--json"
    )
    summary = _strict(ran.stdout)
    removed = summary["removed"]
    assert isinstance(removed, list)
    assert removed == ['"caf\\xe9 \\\\ \\".bin"']
    print(f"non-UTF-8 key in --json: {removed[0]}")
