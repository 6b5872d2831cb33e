"""``replicator bench delta`` runs the real backfill pipeline on every
workload and reports figures that must hold whatever the machine's speed:
new random bytes always ship, and never more than a full-copy replicator
would send plus the chunks around each change."""

from __future__ import annotations

import json

from click.testing import CliRunner

from replicator.bench.workloads import generate
from replicator.cli import main

NAMES = {w.name for w in generate(1 << 20)}


def test_bench_delta_json() -> None:
    args = ["bench", "delta", "--scale", "2MiB", "--big-size", "2MiB"]
    args += ["--rss-size", "3MiB", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc["workloads"]) == NAMES
    for name, r in doc["workloads"].items():
        # Random new content cannot be deduplicated away.
        assert r["shipped_bytes"] >= r["changed_bytes"], name
        # Shipped is the whole wire: chunk data plus index and manifest bytes.
        assert r["shipped_bytes"] == r["shipped_data_bytes"] + r["shipped_metadata_bytes"]
        assert r["shipped_metadata_bytes"] > 0, name
        # Never more chunk data than a whole-object replicator would send.
        assert r["shipped_data_bytes"] <= r["full_copy_bytes"], name
        assert r["meets_target"] == (r["shipped_bytes"] <= r["target_bytes"]), name
        assert 0 < r["metadata_vs_data"] < 0.05, name
    print({n: round(r["shipped_vs_changed"], 3) for n, r in doc["workloads"].items()})
    t = doc["throughput"]
    assert all(v > 0 for v in t.values()) and "changed_vs_fused" in t
    assert doc["peak_rss_growth_bytes"] > 0
    assert doc["rss_file_bytes"] == 3 << 20


def test_bench_delta_table() -> None:
    args = ["bench", "delta", "--scale", "1MiB", "--big-size", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert name in result.output
