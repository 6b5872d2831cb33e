"""``replicator bench e2e`` at a tiny scale (the command runs, its figures
are consistent), and the true-RPO arithmetic it grades the daemon with."""

from __future__ import annotations

import json
import subprocess
import sys

from replicator.bench.e2e_stats import Sample, Write, covered_at, rpo_error, true_rpo
from replicator.demo.daemon import Durable

MAIN = "from replicator.cli import main; main()"
S = 10**9


def test_bench_e2e_tiny_scale_json() -> None:
    args = ["bench", "e2e", "--duration", "3", "--rate", "10"]
    args += ["--large-size", "2MiB", "--large-every", "2", "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    print("bench e2e:", json.dumps(result, indent=1))
    assert result["not_durable"] == 0
    assert result["daemon_exit"] == 0
    assert set(result["latency_seconds"]) == {"small", "large"}
    assert result["latency_seconds"]["small"]["count"] >= 20
    assert result["latency_seconds"]["large"]["count"] >= 1
    assert result["rpo_samples"] > 0
    assert set(result["rpo_error_seconds"]) == {"peer-a", "peer-b"}
    assert result["throughput"]["objects_per_second"] > 0
    assert result["large_vs_backfill"]["backfill_mb_per_second"] > 0


def _durable(peer: str, key: str, t: int, done: int) -> Durable:
    return Durable(peer, key, t, (done - t) / 1e9, 0, 0)


def test_true_rpo_is_the_oldest_uncovered_visible_write() -> None:
    writes = [Write("a", "small", 1, 10 * S), Write("b", "small", 1, 12 * S)]
    covered = covered_at([_durable("p", "a", 10 * S, 15 * S), _durable("p", "b", 12 * S, 13 * S)])
    assert true_rpo(writes, covered, "p", 9 * S) == 0.0  # nothing visible yet
    assert true_rpo(writes, covered, "p", 11 * S) == 1.0
    assert true_rpo(writes, covered, "p", 14 * S) == 4.0  # a still pending, b covered
    assert true_rpo(writes, covered, "p", 15 * S) == 0.0
    assert true_rpo(writes, covered, "q", 20 * S) == 10.0  # never covered at q


def test_rpo_error_signs() -> None:
    writes = [Write("a", "small", 1, 10 * S)]
    covered = covered_at([_durable("p", "a", 10 * S, 20 * S)])
    samples = [Sample(12 * S, "p", 1.5), Sample(14 * S, "p", 4.5)]
    err = rpo_error(writes, covered, samples)["p"]
    assert err["most_under"] == -0.5
    assert err["most_over"] == 0.5
    assert err["max"] == 0.5
