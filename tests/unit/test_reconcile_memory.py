"""The reconcile comparison's memory does not grow with the key count.

Runs the measurement of tests/bench/reconcile_rss.py in child processes at
two sizes (the external sort spills at both) and prints the figures; the
assertion is on the pairing, not on a threshold (the machine is shared)."""

from __future__ import annotations

from tests.bench.reconcile_rss import measure


def test_streaming_comparison_pairs_every_key_in_bounded_memory() -> None:
    for n in (20_000, 60_000):
        got = measure("stream", n)
        assert (got["pairs"], got["both"]) == (n, n)
        print(
            f"compare {n} keys: peak RSS growth {got['growth_bytes'] / 2**20:.1f} MiB "
            f"({got['seconds']} s)"
        )
