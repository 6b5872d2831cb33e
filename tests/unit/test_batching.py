"""Many small objects: batched manifest reads and group commits on a real
filesystem peer, through the same wrappers a run uses, and the command
line's start-up loading only what the command needs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from replicator.config import FsDestinationSettings, FsSourceSettings, Settings, StoreSettings
from replicator.errors import IntegrityError
from replicator.pipeline.backfill import run_backfill
from replicator.pipeline.counting import CountingBackend
from replicator.store.backends.fs import TMP_PREFIX, FsBackend
from replicator.store.bulk import holds_any
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


def _settings(tmp: Path, format_version: Literal[2, 3] = 3) -> Settings:
    return Settings(
        source=FsSourceSettings(path=tmp / "src"),
        destinations=[FsDestinationSettings(name=f"p{i}", path=tmp / f"p{i}") for i in range(2)],
        store=StoreSettings(cache_dir=tmp / "cache", concurrency=4, format_version=format_version),
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
    assert [n async for n in backend.list_names("k/")] == [f"k/{i}" for i in range(5)]
    assert await holds_any(backend, "k/") and not await holds_any(backend, "m/")


async def test_names_are_listed_without_sizes_in_listing_order(tmp_path: Path) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    keys = sorted(f"m/{c}/{i:03d}" for c in "ab" for i in range(150))  # pages of 64, 256, ...
    await fs.put_many_if_absent([(k, b"x", None) for k in keys])
    wrapped = CountingBackend(RetryingBackend(fs))
    assert [n async for n in wrapped.list_names("m/")] == keys
    assert [i.key async for i in fs.list("m/")] == keys
    assert [n async for n in wrapped.list_names("m/b/1")] == [k for k in keys if "m/b/1" in k]


async def test_a_first_copy_skips_the_removal_pass_a_rerun_makes_it(tmp_path: Path) -> None:
    """An empty peer holds nothing to tombstone: no walk of the manifests just
    written. Once it holds manifests, a removed file is tombstoned again."""
    src = tmp_path / "src"
    for i in range(20):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(50 + i))
    settings = _settings(tmp_path, format_version=2)  # counts walks of manifests/ directories
    walks: list[str] = []
    real = FsBackend.list_names

    def counted(self: FsBackend, prefix: str = "") -> AsyncIterator[str]:
        walks.append(prefix)
        return real(self, prefix)

    FsBackend.list_names = counted  # type: ignore[method-assign]
    try:
        first = await run_backfill(settings)
        assert (first.replicated, first.removed) == (20, 0)
        assert len(walks) == 2  # each peer's "any manifest?" check, no removal pass
        (src / "d0" / "f0").unlink()
        again = await run_backfill(settings)
    finally:
        FsBackend.list_names = real  # type: ignore[method-assign]
    assert (again.unchanged, again.removed, again.manifests) == (19, 2, {"p0": 1, "p1": 1})
    assert len(walks) == 6  # the checks, then one removal pass per peer
