"""Fixtures of the daemon tier: no test leaves a `replicator run` behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon.harness import Daemon


@pytest.fixture(autouse=True)
def _reap_daemons() -> Iterator[None]:
    yield
    Daemon.reap()
