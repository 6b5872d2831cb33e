"""Issue 7's corpus of operator mistakes and sick environments, each run as a
real ``replicator`` process: one error line naming the thing, exit 1 or 2,
never a traceback (docs/operator-errors.md lists the messages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator import cli, config
from tests.integration.cli_cases import fs_config, refused, replicator

pytestmark = pytest.mark.integration


def _tree(tmp: Path) -> None:
    (tmp / "src" / "d").mkdir(parents=True)
    (tmp / "src" / "d" / "one.bin").write_bytes(os.urandom(70_000))
    (tmp / "src" / "two.txt").write_bytes(b"two")


@pytest.fixture
def replicated(tmp_path: Path) -> Path:
    """A source tree backfilled to peers a and b; returns the config."""
    return _replicate(tmp_path)


@pytest.fixture
def replicated_v2(tmp_path: Path) -> Path:
    """The same, to format 2 peers (one object per manifest under manifests/)."""
    return _replicate(tmp_path, "format_version = 2\n")


def _replicate(tmp: Path, store: str = "") -> Path:
    _tree(tmp)
    cfg = fs_config(tmp, cache_dir=tmp / "cache", extra=store)
    ran = replicator("backfill", "--config", cfg)
    assert ran.code == 0, ran.stderr
    return cfg


# ----------------------------------------------------------------- config


def _s3_dest(name: str, bucket: str, prefix: str = "") -> str:
    return (
        f'[[destinations]]\nname = "{name}"\ntype = "s3"\nbucket = "{bucket}"\n'
        f'prefix = "{prefix}"\nendpoint_url = "http://127.0.0.1:9"\n\n'
    )


CONFIG_MISTAKES = {
    "destination is the source": ("same", "is the same place as the source"),
    "destination inside the source": ("inside", "is inside the source"),
    "destination contains the source": ("contains", "contains the source"),
    "empty destination path": ("empty-path", "destinations[0].path: must not be empty"),
    "empty source path": ("empty-source", "source.path: must not be empty"),
    "empty destination name": ("empty-name", "destinations[0].name"),
    "empty bucket": ("empty-bucket", "destinations[0].bucket"),
    "two destinations on one path": ("twins", "is the same place as destination 'a'"),
    "nested destinations": ("nested", "is inside destination 'a'"),
    "two destinations on one bucket+prefix": ("s3-twins", "destination 'a'"),
    "s3 destination inside the s3 source": ("s3-inside", "is inside the source (s3:http"),
    "type left out": ("no-type", "destinations[0]: 'type' is missing: set type = 'fs' or 's3'"),
    "unknown type": ("bad-type", "type = 'gcs' is not allowed: use 'fs' or 's3'"),
}


def _mistake(tmp: Path, kind: str) -> str:
    src, a = tmp / "src", tmp / "a"
    base = f'[source]\ntype = "fs"\npath = "{src}"\n\n'
    peer = '[[destinations]]\nname = "{n}"\ntype = "fs"\npath = "{p}"\n\n'
    peers: dict[str, list[tuple[str, Path | str]]] = {
        "same": [("a", src)],
        "inside": [("a", src / "replica")],
        "contains": [("a", tmp)],
        "empty-path": [("a", "")],
        "empty-name": [("", a)],
        "twins": [("a", a), ("b", a)],
        "nested": [("a", a), ("b", a / "b")],
    }
    if kind in peers:
        return base + "".join(peer.format(n=n, p=p) for n, p in peers[kind])
    if kind == "empty-source":
        return '[source]\ntype = "fs"\npath = " "\n\n' + peer.format(n="a", p=a)
    if kind == "empty-bucket":
        return base + _s3_dest("a", "")
    if kind == "s3-inside":
        source = '[source]\ntype = "s3"\nbucket = "dr"\n\n'
        origin = '[origin]\nendpoint_url = "http://127.0.0.1:9"\n\n'
        return source + origin + _s3_dest("a", "dr", "replica/")
    if kind == "s3-twins":
        return base + _s3_dest("a", "dr", "x/") + _s3_dest("b", "dr", "x")
    if kind == "no-type":
        return base + f'[[destinations]]\nname = "a"\npath = "{a}"\n'
    return base + f'[[destinations]]\nname = "a"\ntype = "gcs"\npath = "{a}"\n'


@pytest.mark.parametrize("case", sorted(CONFIG_MISTAKES))
def test_config_mistakes_are_refused_before_anything_is_written(tmp_path: Path, case: str) -> None:
    kind, words = CONFIG_MISTAKES[case]
    _tree(tmp_path)
    cfg = tmp_path / "replicator.toml"
    cfg.write_text(_mistake(tmp_path, kind))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    ran = replicator("backfill", "--config", cfg)
    refused(ran, 2, str(cfg), words)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing written anywhere


# ----------------------------------------------------------------- damaged peers

WRONG_SHAPES = {
    "a list": "[]",
    "no chunker": '{"format":"replicator-store","version":1,"digest":"blake3"}',
    "bad chunker": json.dumps(
        {
            "format": "replicator-store",
            "version": 1,
            "digest": "blake3",
            "chunker": {
                "algorithm": "fastcdc-2020",
                "min_size": 1,
                "avg_size": 2,
                "max_size": 3,
                "normalization": 1,
                "seed": 0,
            },
        }
    ),
    "not json": "\x00garbage",
}


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_peer_config_of_the_wrong_shape_is_named(replicated: Path, shape: str) -> None:
    config_file = replicated.parent / "b" / "config"
    config_file.write_text(WRONG_SHAPES[shape])
    runs: list[list[str | Path]] = [
        ["backfill", "--config", replicated],
        ["verify", "--config", replicated, "--destination", "b"],
        ["restore", "--config", replicated, "--destination", "b", "--prefix", ""],
    ]
    for args in runs:
        if args[0] == "restore":
            args += ["--to", replicated.parent / "out"]
        refused(replicator(*args), 2, "destination 'b'", str(config_file))


def test_stray_and_garbage_index_files_are_skipped_not_fatal(replicated: Path) -> None:
    tmp = replicated.parent
    index = tmp / "a" / "index"
    (index / "zz").mkdir()
    (index / "zz" / "stray.txt").write_text("not an index")
    (index / "ab").mkdir(exist_ok=True)
    (index / "ab" / ("ab" + "0" * 62)).write_text("{garbage")
    (tmp / "src" / "new.bin").write_bytes(os.urandom(50_000))
    (tmp / "cache").joinpath("x").write_text("")  # the cache dir stays usable
    for f in (tmp / "cache").glob("*.sqlite*"):
        f.unlink()  # force a full index sync from the peers
    ran = replicator("backfill", "--config", replicated, "--json")
    assert ran.code == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["replicated"] == 1 and summary["errors"] == 0
    assert summary["manifests"] == {"a": 1, "b": 1}  # both peers got the new file
    assert "destination 'a': skipped index/zz/stray.txt: not an index name" in ran.stderr
    assert f"skipped index/ab/ab{'0' * 62}: pack index is not valid JSON" in ran.stderr
    for peer in ("a", "b"):
        out = tmp / f"out-{peer}"
        restored = replicator(
            "restore", "--config", replicated, "--destination", peer, "--prefix", "", "--to", out
        )
        assert restored.code == 0, restored.stderr
        assert (out / "new.bin").read_bytes() == (tmp / "src" / "new.bin").read_bytes()


def test_stray_manifest_files_never_end_in_a_traceback(replicated_v2: Path) -> None:
    replicated = replicated_v2  # stray files in a format 2 store's manifests/ tree
    tmp = replicated.parent
    (tmp / "a" / "manifests" / "stray").write_text("x")
    (tmp / "a" / "manifests" / "local" / "stray").write_text("x")
    out = tmp / "out"
    ran = replicator(
        "restore", "--config", replicated, "--destination", "a", "--prefix", "", "--to", out
    )
    assert ran.code == 0, ran.stderr
    assert (out / "two.txt").read_bytes() == b"two"
    assert "destination 'a': skipped manifests/local/stray: not a manifest name" in ran.stderr
    verified = replicator("verify", "--config", replicated, "--destination", "a")
    assert verified.code == 0, verified.stderr
    assert "skipped manifests/local/stray" in verified.stderr
    backfill = replicator("backfill", "--config", replicated)
    # The removal pass skips it too (pipeline/reconcile.py keys_at_peer).
    assert backfill.code == 0, backfill.stderr


# ----------------------------------------------------------------- environment


def test_existing_store_on_a_read_only_filesystem(replicated: Path) -> None:
    tmp = replicated.parent
    (tmp / "src" / "two.txt").write_bytes(b"changed")
    ran = replicator("backfill", "--config", replicated, readonly=[tmp / "a"])
    refused(ran, 1, "destination 'a'", str(tmp / "a"), "Read-only file system")
    # Reading needs no write: verify and restore work on the read-only store.
    ran = replicator("verify", "--config", replicated, "--destination", "a", readonly=[tmp / "a"])
    assert ran.code == 0, ran.stderr


def test_unusable_cache_dir(tmp_path: Path) -> None:
    _tree(tmp_path)
    as_file = tmp_path / "cachefile"
    as_file.write_text("")
    cfg = fs_config(tmp_path, cache_dir=as_file)
    refused(replicator("backfill", "--config", cfg), 2, str(as_file), "store.cache_dir")
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = fs_config(tmp_path, cache_dir=ro / "cache")
    ran = replicator("backfill", "--config", cfg, readonly=[ro])
    refused(ran, 2, str(ro / "cache"), "Read-only file system", "store.cache_dir")
    ro_existing = tmp_path / "ro2"
    ro_existing.mkdir()
    cfg = fs_config(tmp_path, cache_dir=ro_existing)
    ran = replicator("backfill", "--config", cfg, readonly=[ro_existing])
    refused(ran, 2, str(ro_existing), "store.cache_dir")


def test_home_cache_not_writable(tmp_path: Path) -> None:
    _tree(tmp_path)
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    cfg = fs_config(tmp_path)  # no store.cache_dir: ~/.cache/replicator/index
    ran = replicator("backfill", "--config", cfg, env={"HOME": str(home)}, readonly=[home])
    refused(ran, 2, str(home / ".cache" / "replicator"), "store.cache_dir")


def test_restore_target_that_cannot_be_created(replicated: Path) -> None:
    tmp = replicated.parent
    (tmp / "file").write_text("")
    base: list[str | Path] = ["restore", "--config", replicated, "--destination", "a"]
    base += ["--prefix", ""]
    refused(replicator(*base, "--to", tmp / "file" / "sub"), 2, "--to", "Not a directory")
    ro = tmp / "ro"
    ro.mkdir()
    ran = replicator(*base, "--to", ro / "out", readonly=[ro])
    refused(ran, 2, "--to", str(ro / "out"), "Read-only file system")


@pytest.mark.parametrize("at", ["nan", "inf", "-Infinity", "sNaN", "yesterday"])
def test_restore_at_must_be_a_finite_time(replicated: Path, at: str) -> None:
    ran = replicator(
        "restore", "--config", replicated, "--destination", "a", "--key", "two.txt",
        "--to", replicated.parent / "out", "--at", at,
    )  # fmt: skip
    refused(ran, 2, "--at", repr(at))


def test_no_space_left_names_the_destination_and_path(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    small = tmp_path / "small"
    small.mkdir()
    cfg = fs_config(tmp_path, peers=[("tiny", small)], cache_dir=tmp_path / "cache")
    cmd = f'mount -t tmpfs -o size=1m tmpfs "{small}" && exec "$@"'
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", cmd, "sh", sys.executable, "-m", "replicator",
         "backfill", "--config", str(cfg)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "destination 'tiny'" in proc.stdout + proc.stderr
    assert f"{small}/packs/" in proc.stdout + proc.stderr
    assert "No space left on device" in proc.stdout + proc.stderr
    print(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- last resort


def test_unexpected_errors_are_one_line_unless_debugging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(config, "load", boom)
    monkeypatch.delenv("REPLICATOR_DEBUG", raising=False)
    run = CliRunner().invoke(cli.main, ["backfill"])
    assert run.exit_code == 1
    assert run.stderr.strip().splitlines() == [
        "error: RuntimeError: something nobody foresaw "
        "(run with --debug or REPLICATOR_DEBUG=1 for the traceback)"
    ]
    run = CliRunner().invoke(cli.main, ["--debug", "backfill"])
    assert run.exit_code == 1 and "Traceback" in run.stderr
    monkeypatch.setenv("REPLICATOR_DEBUG", "1")
    cli._debug["on"] = False
    run = CliRunner().invoke(cli.main, ["backfill"])
    assert run.exit_code == 1 and "Traceback" in run.stderr
