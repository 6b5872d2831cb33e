"""Unit-test settings: hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE``.

``dev`` (the default) keeps the edit-test loop quick, ``ci`` runs a moderate
number of examples, ``thorough`` is for a deliberate long run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from replicator.store.index_cache import IndexCache

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
async def caches(tmp_path: Path) -> AsyncIterator[list[IndexCache]]:
    """Two open index caches (one per peer of a two-peer ship test)."""
    out = [IndexCache(tmp_path / f"cache{i}.sqlite", b"cfg") for i in range(2)]
    for c in out:
        await c.open()
    yield out
    for c in out:
        await c.close()
