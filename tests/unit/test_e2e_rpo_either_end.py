"""The RPO error of ``bench e2e`` when the true RPO falls while a scrape is in flight."""

from __future__ import annotations

from replicator.bench.e2e_stats import Sample, Write, covered_at, rpo_error
from replicator.demo.daemon import Durable

S = 10**9


def test_a_fall_during_the_scrape_is_judged_against_either_end() -> None:
    # One write at 10 s, durable at 20 s: the true RPO climbs to 10 s, then falls to 0.
    writes = [Write("a", "small", 1, 10 * S)]
    covered = covered_at([Durable("p", "a", 10 * S, 10.0, 0, 0)])
    # Asked at 19.9 s (true 9.9), answered at 20.1 s (true 0): the daemon said 9.9.
    samples = [Sample(20 * S + S // 10, "p", 9.9, took_seconds=0.2)]
    err = rpo_error(writes, covered, samples)["p"]
    assert err["max"] == 9.9  # dated when answered, as before
    assert err["worst"]["true"] == 0.0 and err["worst"]["true_when_asked"] == 9.9
    assert err["max_either_end"] == 0.0  # right when it was asked


def test_either_end_never_hides_a_wrong_value() -> None:
    writes = [Write("a", "small", 1, 10 * S)]
    covered = covered_at([Durable("p", "a", 10 * S, 10.0, 0, 0)])
    samples = [Sample(15 * S, "p", 2.0, took_seconds=0.1)]  # true 5.0 (4.9 when asked)
    err = rpo_error(writes, covered, samples)["p"]
    assert err["max"] == 3.0 and abs(err["max_either_end"] - 2.9) < 1e-9
