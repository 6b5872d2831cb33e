"""Many small objects: batched manifest reads and group commits on a real
filesystem peer, through the same wrappers a run uses, and the command
line's start-up loading only what the command needs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from replicator.config import FsDestinationSettings, FsSourceSettings, Settings, StoreSettings
from replicator.errors import IntegrityError
from replicator.pipeline.backfill import run_backfill
from replicator.pipeline.counting import CountingBackend
from replicator.store.backends.fs import TMP_PREFIX, FsBackend
from replicator.store.retry import RetryingBackend


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def test_group_commit_answers_each_item_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    await fs.put("m/present/1", b"old")
    items = [
        (f"m/k{i}/v", f"manifest {i}".encode(), _sha(f"manifest {i}".encode())) for i in range(9)
    ]
    items += [("m/present/1", b"new", _sha(b"new")), ("m/bad/1", b"x", _sha(b"y"))]
    backend = CountingBackend(RetryingBackend(fs))
    answers = await backend.put_many_if_absent(items)
    assert answers[:10] == [True] * 9 + [False]
    assert isinstance(answers[10], IntegrityError)  # that item alone failed
    assert backend.counts["put"] == len(items)
    for key, data, _ in items[:9]:
        assert await fs.get(key) == data
    assert await fs.get("m/present/1") == b"old"  # put-if-absent: never replaced
    assert await fs.head("m/bad/1") is None
    left = [p for p in (tmp_path / "peer").rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert left == []


async def test_manifests_under_many_prefixes_read_in_one_batch(tmp_path: Path) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    for key in ("a/1-x", "a/1-y", "a/2-x", "b/1-x"):
        await fs.put(key, key.encode())
    backend = CountingBackend(RetryingBackend(fs))
    found = await backend.get_under(["a/1-", "b/", "c/"])
    assert found == [[("a/1-x", b"a/1-x"), ("a/1-y", b"a/1-y")], [("b/1-x", b"b/1-x")], []]
    assert backend.counts["get"] == 3


def _settings(tmp: Path) -> Settings:
    return Settings(
        source=FsSourceSettings(path=tmp / "src"),
        destinations=[FsDestinationSettings(name=f"p{i}", path=tmp / f"p{i}") for i in range(2)],
        store=StoreSettings(cache_dir=tmp / "cache", concurrency=4),
    )


async def test_rerun_of_many_small_files_skips_unchanged_and_finds_the_changed(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    for i in range(600):  # more than one batch of held checks
        (src / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 7}" / f"f{i}").write_bytes(os.urandom(100 + i))
    settings = _settings(tmp_path)
    first = await run_backfill(settings)
    assert (first.replicated, first.errors) == (600, 0)
    assert first.manifests == {"p0": 600, "p1": 600}
    touched = src / "d3" / "f3"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = await run_backfill(settings)
    print(f"first copy {first.elapsed_seconds:.2f} s, re-run {again.elapsed_seconds:.2f} s")
    assert (again.unchanged, again.replicated, again.errors) == (599, 1, 0)
    assert again.put_requests == {"p0": 1, "p1": 1}  # the one manifest, no pack


def test_backfill_start_up_loads_neither_s3_nor_other_commands() -> None:
    code = (
        "import sys\n"
        "from replicator.cli import main\n"
        "try:\n"
        "    main(['backfill', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    loaded = set(out.split())
    assert "replicator.commands.backfill" in loaded
    for heavy in ("aiobotocore", "botocore", "replicator.bench.delta", "replicator.daemon"):
        assert heavy not in loaded, heavy


class _SingleOnly:
    """A peer offering only the single-object methods (as S3 does)."""

    def __init__(self, inner: FsBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.put_if_absent = inner.put_if_absent
        self.get = inner.get
        self.list = inner.list


async def test_batches_fall_back_to_single_requests_through_the_wrappers(
    tmp_path: Path,
) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    backend = CountingBackend(RetryingBackend(_SingleOnly(fs)))  # type: ignore[arg-type]
    items = [(f"k/{i}", b"v%d" % i, _sha(b"v%d" % i)) for i in range(5)]
    assert await backend.put_many_if_absent(items) == [True] * 5
    assert await backend.put_many_if_absent(items[:2]) == [False, False]
    assert await backend.get_under(["k/1", "k/9"]) == [[("k/1", b"v1")], []]
