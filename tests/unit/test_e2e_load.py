"""``bench e2e``'s steady load: large objects are generated and written on
their own thread, so the small writes keep their pace meanwhile (on one
thread a 64 MiB object paused them for about a second, then ~50 went at
once, just as the daemon started on the large object)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

from replicator.bench.e2e import Load

MIB = 1024 * 1024


class Timed(Load):
    """The load, with each write's start and end (monotonic) recorded."""

    spans: list[tuple[str, float, float]]

    def _write(self, key: str, size_class: str, pieces: Iterable[bytes]) -> None:
        started = time.monotonic()
        super()._write(key, size_class, pieces)
        self.spans.append((size_class, started, time.monotonic()))


def test_small_writes_go_on_while_a_large_object_is_written(tmp_path: Path) -> None:
    load = Timed(tmp_path / "source", rate=100.0, large_size=48 * MIB, large_every=100.0)
    load.spans = []
    load.run(1.5, threading.Event())
    [(_, large_start, large_end)] = [s for s in load.spans if s[0] == "large"]
    during = [s for s in load.spans if s[0] == "small" and large_start < s[1] < large_end]
    small = [w for w in load.writes if w.size_class == "small"]
    print(
        f"large object written in {large_end - large_start:.3f} s; "
        f"{len(during)} of {len(small)} small writes meanwhile"
    )
    assert during, "the small writes waited for the large object"
    [large] = [w for w in load.writes if w.size_class == "large"]
    assert large.size == 48 * MIB == (tmp_path / "source" / large.key).stat().st_size
    assert all((tmp_path / "source" / w.key).stat().st_size == w.size for w in small)
