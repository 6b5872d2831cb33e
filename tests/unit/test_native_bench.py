"""``replicator bench chunk`` runs end to end and reports every ratio as a
positive number (no timing thresholds: the values depend on the machine)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from replicator.bench.chunk import parse_size, random_bytes
from replicator.cli import main

ALWAYS = [
    "fused_vs_bound",
    "fused_whole_vs_bound",
    "fused_vs_sequential_model",
    "fused_vs_sequential_model_min",
    "fused_vs_sequential_model_max",
    "threads_speedup",
    "parallel_capacity",
    "threads_speedup_vs_capacity",
    "peak_rss_growth_bytes",
]
PEER_RATIOS = {"pyfastcdc": "chunk_vs_pyfastcdc", "hf_xet": "file_vs_hf_xet"}


def test_bench_chunk_json(tmp_path: Path) -> None:
    args = ["bench", "chunk", "--size", "2MiB", "--file-size", "3MiB", "--threads", "2"]
    args += ["--repeat", "1", "--dir", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["size_bytes"], doc["file_size_bytes"], doc["threads"]) == (2 << 20, 3 << 20, 2)
    ratios = doc["ratios"]
    expected = list(ALWAYS)
    for module, ratio in PEER_RATIOS.items():
        if importlib.util.find_spec(module) is not None:
            expected.append(ratio)
        else:
            assert ratio not in ratios
    for key in expected:
        value = ratios[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, key
    assert all(v > 0 for v in doc["rates_gbps"].values())
    assert ratios["fused_vs_sequential_model_min"] <= ratios["fused_vs_sequential_model_max"]
    assert set(doc["notes"]) <= set(ratios)
    assert list(tmp_path.iterdir()) == [], "the temporary file was left behind"


def test_bench_chunk_table(tmp_path: Path) -> None:
    args = ["bench", "chunk", "--size", "1MiB", "--repeat", "1", "--dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "fused_vs_bound" in result.output
    assert "GB/s" in result.output


def test_parse_size() -> None:
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("64M") == 64 << 20
    assert parse_size("1.5KiB") == 1536
    assert parse_size("4096") == 4096
    for bad in ("", "0", "-1M", "lots"):
        with pytest.raises(click.BadParameter):
            parse_size(bad)


def test_random_bytes_are_seeded_and_sized() -> None:
    assert len(random_bytes(100)) == 100
    assert random_bytes(1000, seed=3) == random_bytes(1000, seed=3)
    assert random_bytes(1000, seed=3) != random_bytes(1000, seed=4)
