"""Every reader on a store format 3 peer written by ``replicator backfill``:
re-run (held check), update, removal pass (tombstones), ``restore`` (latest,
``--at``), ``verify`` (structural, deep, ``--against-source``) and ``drill``,
all through the CLI as an operator runs them. The readers go through the
peer's ManifestStore; this runs where store/segment_store.py exists (format 3)."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replicator.cli import main

pytestmark = pytest.mark.integration
pytest.importorskip("replicator.store.segment_store")


def _cli(*args: str) -> Any:
    run = CliRunner().invoke(main, list(args))
    assert run.exit_code == 0, run.output
    # Progress lines come first; the report is the last JSON document
    # starting a line (a summary line may follow it).
    text = run.output
    start = text.rindex("\n{\n") + 1 if "\n{\n" in text else text.index("{")
    report, _ = json.JSONDecoder().raw_decode(text, start)
    return report


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _config(tmp: Path) -> Path:
    cfg = tmp / "replicator.toml"
    peers = "".join(
        f'[[destinations]]\nname = "{n}"\ntype = "fs"\npath = "{tmp / n}"\n\n' for n in ("a", "b")
    )
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{tmp / "src"}"\n\n{peers}'
        f'[store]\ncache_dir = "{tmp / "cache"}"\nformat_version = 3\n'
    )
    return cfg


def test_every_reader_on_a_format_3_peer(tmp_path: Path) -> None:
    src, rng = tmp_path / "src", random.Random(3)
    for i in range(60):
        path = src / f"d{i % 3}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, 20_000)))
    (src / " odd %name.bin").write_bytes(rng.randbytes(300_000))
    cfg = str(_config(tmp_path))
    first = _cli("backfill", "--config", cfg, "--json")
    assert first["errors"] == 0 and first["objects"] == 61
    assert not (tmp_path / "a" / "manifests").exists() and (tmp_path / "a" / "segments").is_dir()
    again = _cli("backfill", "--config", cfg, "--json")
    assert (again["unchanged"], again["replicated"]) == (61, 0), "the held check reads segments"

    old = (src / "d0" / "f00.bin").read_bytes()
    time.sleep(0.05)
    before_update = time.time_ns()
    time.sleep(0.05)
    (src / "d0" / "f00.bin").write_bytes(b"new bytes")
    os.unlink(src / "d1" / "f01.bin")
    update = _cli("backfill", "--config", cfg, "--json")
    assert (update["replicated"], update["removed"]) == (1, 2), "one tombstone per peer"

    restored = _cli("restore", "--config", cfg, "--destination", "b", "--prefix", "", "--to",
                    str(tmp_path / "out"), "--json")  # fmt: skip
    assert restored["removed"] == ["d1/f01.bin"] and _tree(tmp_path / "out") == _tree(src)
    at = f"{before_update / 1e9:.6f}"
    _cli("restore", "--config", cfg, "--destination", "a", "--key", "d0/f00.bin", "--at", at,
         "--to", str(tmp_path / "at"), "--json")  # fmt: skip
    assert (tmp_path / "at" / "d0" / "f00.bin").read_bytes() == old

    verified = _cli("verify", "--config", cfg, "--destination", "a", "--deep", "--json")
    assert verified["ok"] and (verified["manifests"], verified["tombstones"]) == (63, 1)
    synced = _cli("verify", "--config", cfg, "--destination", "b", "--against-source", "--json")
    assert synced["findings"] == [] and synced["in_sync"] == 60
    drilled = _cli("drill", "--config", cfg, "--destination", "a", "--json")
    assert drilled["problems"] == [] and (drilled["objects"], drilled["removed"]) == (60, 1)
    print(f"format 3: 61 objects, re-run {again['elapsed_seconds']} s, every reader agrees")
