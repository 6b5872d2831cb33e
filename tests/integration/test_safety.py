"""Data safety of the filesystem path (issue 6): a missing or unreadable
source is an error before anything is written, the mass-deletion guard,
ctime-ordered versions with the mtime kept and restored, borg's change
rule, and ``verify --against-source``. Peers are real directory stores,
read back through the CLI (restore, verify) as an operator would."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from replicator.cli import main
from replicator.store.backends import FsBackend
from tests.integration.test_backfill import manifests_at, write_tree


def _config(
    tmp: Path, source: Path | None = None, fraction: float | None = None, format_version: int = 3
) -> Path:
    cfg = tmp / "replicator.toml"
    store = f'[store]\ncache_dir = "{tmp / "cache"}"\nformat_version = {format_version}\n'
    if fraction is not None:
        store += f"max_delete_fraction = {fraction}\n"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{source or tmp / "src"}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{tmp / "a"}"\n\n' + store
    )
    return cfg


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _backfill(cfg: Path, *extra: str) -> Result:
    return _cli("backfill", "--config", str(cfg), "--json", *extra)


def _restore(cfg: Path, out: Path, *extra: str) -> Result:
    return _cli("restore", "--config", str(cfg), "--destination", "a", "--to", str(out), *extra)


# ------------------------------------------------------------ missing source


@pytest.mark.parametrize("case", ["missing", "a-file", "typo"])
def test_a_missing_source_exits_2_naming_it_and_writes_nothing(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"x": b"1"})
    cfg = _config(tmp_path)
    assert _backfill(cfg).exit_code == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "a").rglob("*"))
    bad = {"missing": tmp_path / "unmounted", "a-file": src / "x", "typo": tmp_path / "scr"}[case]
    run = _backfill(_config(tmp_path, source=bad))
    assert run.exit_code == 2, run.output
    assert str(bad) in run.output and "Traceback" not in run.output
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "a").rglob("*"))
    assert after == before, "nothing written at the peer"
    args = ["verify", "--config", str(_config(tmp_path, source=bad)), "--destination", "a"]
    checked = _cli(*args, "--against-source")
    assert checked.exit_code == 2 and str(bad) in checked.output
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert _backfill(_config(fresh, source=bad)).exit_code == 2
    assert not (fresh / "a").exists(), "not even a store config at a new peer"
    print(f"{case}: exit 2, {run.output.strip()!r}")


def test_an_unreadable_source_root_is_refused(tmp_path: Path) -> None:
    """As an unprivileged user (root reads everything), in a child process."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="replicator-unreadable-"))
    try:
        base.chmod(0o755)
        (base / "ok").mkdir(mode=0o755)
        (base / "closed").mkdir(mode=0o000)
        code = (
            "import os, sys\n"
            "from pathlib import Path\n"
            "from replicator.origins.fs import check_root\n"
            "from replicator.errors import SourceUnavailableError\n"
            "os.setgid(65534); os.setuid(65534)  # after the imports: /root is closed\n"
            f"check_root(Path({str(base / 'ok')!r}))\n"
            f"try:\n    check_root(Path({str(base / 'closed')!r}))\n"
            "except SourceUnavailableError as e:\n    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 3, proc.stderr
        assert "closed" in proc.stdout and "cannot be read" in proc.stdout
        print(f"unreadable root: {proc.stdout.strip()}")
    finally:
        (base / "closed").chmod(0o755)
        for d in ("ok", "closed"):
            (base / d).rmdir()
        base.rmdir()


# ------------------------------------------------------------ mass deletion


def test_mass_deletion_is_refused_unless_allowed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {f"d/f{i:02d}": b"%d" % i for i in range(20)})
    cfg = _config(tmp_path)
    assert _backfill(cfg).exit_code == 0
    os.remove(src / "d/f00")  # 1 of 20: within 10 %
    run = _backfill(cfg)
    assert run.exit_code == 0 and json.loads(run.stdout)["removed"] == 1
    for i in range(1, 6):  # 5 of the 19 live keys
        os.remove(src / f"d/f{i:02d}")
    run = _backfill(cfg)
    assert run.exit_code == 1
    summary = json.loads(run.stdout)
    assert (summary["removed"], summary["refused_removals"]) == (0, {"a": 5})
    assert "refusing to tombstone 5 of 19 live keys" in summary["error_samples"][0]
    live = _cli("verify", "--config", str(cfg), "--destination", "a", "--against-source")
    assert live.exit_code == 1 and live.output.count("not-removed") == 5
    allowed = _backfill(cfg, "--allow-deletes")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["removed"] == 5
    print(f"guard: 1/20 removed, 5/19 refused -> {summary['error_samples'][0]!r}")


def test_an_emptied_source_tombstones_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a": b"1", "b": b"2"})
    cfg = _config(tmp_path, fraction=1.0)
    assert _backfill(cfg).exit_code == 0
    for name in ("a", "b"):
        os.remove(src / name)  # e.g. a volume mounted empty
    run = _backfill(cfg)
    assert run.exit_code == 1 and "listed no object" in run.output
    assert _restore(cfg, tmp_path / "out", "--prefix", "").exit_code == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["a", "b"]


# ------------------------------------------------------------ versions and time


def _epoch(ns: int) -> str:
    """Epoch seconds with every nanosecond (a float would round them)."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def _set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


def test_mtime_moved_backwards_is_still_the_latest(tmp_path: Path) -> None:
    """A checkpoint rolled back with ``cp -p`` (old bytes, old mtime)."""
    src = tmp_path / "src"
    ckpt, old_mtime = src / "ckpt.pt", 1_600_000_000_123_456_789
    versions = [b"v1" * 5000, b"v2-newer" * 3000, b"v1" * 5000]
    mtimes = [old_mtime, old_mtime + 10**12, old_mtime]
    cfg = _config(tmp_path)
    for data, mtime in zip(versions, mtimes, strict=True):
        write_tree(src, {"ckpt.pt": data})
        _set_mtime(ckpt, mtime)  # the third: mtime set back, as cp -p does
        run = _backfill(cfg)
        assert run.exit_code == 0 and json.loads(run.stdout)["replicated"] == 1, run.output
        time.sleep(0.02)  # ctime has a clock tick's resolution
    held = asyncio.run(manifests_at(FsBackend(tmp_path / "a", "a")))["ckpt.pt"]
    assert [m.identity.mtime_ns for m in held] == mtimes
    times = [m.identity.event_time_ns for m in held]
    assert times == sorted(times) and len(set(times)) == 3
    out = tmp_path / "latest"
    assert _restore(cfg, out, "--key", "ckpt.pt").exit_code == 0
    assert (out / "ckpt.pt").read_bytes() == versions[2]
    assert os.stat(out / "ckpt.pt").st_mtime_ns == old_mtime, "restore sets the mtime"
    # --at between each pair of versions, and before the first.
    for i, at in enumerate([times[0] - 1, *((a + b) // 2 for a, b in itertools.pairwise(times))]):
        out = tmp_path / f"at{i}"
        run = _restore(cfg, out, "--prefix", "", "--at", _epoch(at))
        assert run.exit_code == 0, run.output
        expect = {} if i == 0 else {"ckpt.pt": versions[i - 1]}
        assert {p.name: p.read_bytes() for p in out.iterdir()} == expect
    print(f"cp -p rollback: event times {times}, mtimes {mtimes}; --at picks each")


def test_same_size_edit_with_mtime_put_back_is_replicated(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"weights.bin": b"A" * 4096})
    st = os.stat(src / "weights.bin")
    cfg = _config(tmp_path)
    assert _backfill(cfg).exit_code == 0
    time.sleep(0.02)
    with open(src / "weights.bin", "r+b") as f:
        f.write(b"B" * 4096)  # same size ...
    _set_mtime(src / "weights.bin", st.st_mtime_ns)  # ... same mtime
    run = _backfill(cfg)
    assert run.exit_code == 0 and json.loads(run.stdout)["replicated"] == 1, run.output
    replay = _backfill(cfg)
    assert json.loads(replay.stdout)["unchanged"] == 1
    out = tmp_path / "out"
    assert _restore(cfg, out, "--key", "weights.bin").exit_code == 0
    assert (out / "weights.bin").read_bytes() == b"B" * 4096


def test_a_file_replaced_by_another_inode_is_replicated(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"f": b"old!"})
    cfg = _config(tmp_path)
    assert _backfill(cfg).exit_code == 0
    st = os.stat(src / "f")
    write_tree(src, {"g": b"new!"})
    os.replace(src / "g", src / "f")  # rename into place: new inode
    os.utime(src / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(src / "f").st_ino != st.st_ino
    run = _backfill(cfg)
    assert json.loads(run.stdout)["replicated"] == 1, run.output


# ------------------------------------------------------------ verify --against-source


def test_verify_against_source_finds_what_restore_would_get_wrong(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"keep": b"k", "lost-manifest": b"m", "edited": b"e1", "gone": b"g"})
    cfg = _config(tmp_path, fraction=1.0, format_version=2)  # deletes one manifest file
    assert _backfill(cfg).exit_code == 0
    args = ["verify", "--config", str(cfg), "--destination", "a", "--against-source"]
    assert _cli(*args).exit_code == 0
    peer = tmp_path / "a"
    [lost] = [p for p in (peer / "manifests").rglob("*") if p.is_file() and "lost" in str(p)]
    lost.unlink()  # a deleted manifest file
    time.sleep(0.02)
    write_tree(src, {"edited": b"e2", "new": b"n"})
    os.remove(src / "gone")
    run = _cli(*args, "--json")
    assert run.exit_code == 1
    found = {f["key"]: f["kind"] for f in json.loads(run.stdout)["findings"]}
    assert found == {
        "lost-manifest": "missing",
        "edited": "stale",
        "gone": "not-removed",
        "new": "missing",
    }
    assert _backfill(cfg).exit_code == 0
    assert _cli(*args).exit_code == 0, "a backfill repairs each finding"
    print(f"verify --against-source found {found}")


# ------------------------------------------------------------ unreadable directory

_CLI = [sys.executable, "-c", "from replicator.cli import main; main()"]
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _without_dac_override() -> None:
    """In the child: drop the capabilities that let root read any directory."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_one_unreadable_directory_fails_alone(tmp_path: Path) -> None:
    """The CLI in a child process that cannot read a mode-000 directory (root
    without CAP_DAC_OVERRIDE): the rest of the tree is replicated, the run
    exits 1 naming the directory, and no key under it is tombstoned."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop CAP_DAC_OVERRIDE in the child")
    src = tmp_path / "src"
    write_tree(src, {"a/1": b"1", "b/2": b"2", "b/3": b"3", "c/4": b"4"})
    cfg = _config(tmp_path, fraction=1.0)
    assert _backfill(cfg).exit_code == 0
    write_tree(src, {"c/5": b"5"})
    (src / "b").chmod(0o000)
    try:
        proc = subprocess.run(
            [*_CLI, "backfill", "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=_without_dac_override,
        )
    finally:
        (src / "b").chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["objects"], summary["replicated"], summary["removed"]) == (3, 1, 0)
    [error] = summary["error_samples"]
    assert "'b/'" in error and "Permission denied" in error
    held = asyncio.run(manifests_at(FsBackend(tmp_path / "a", "a")))
    assert {k: [m.removed for m in v] for k, v in held.items()} == {
        "a/1": [False],
        "b/2": [False],
        "b/3": [False],
        "c/4": [False],
        "c/5": [False],
    }
    print(f"unreadable b/: exit 1, {error!r}")
