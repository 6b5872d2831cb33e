"""The S3-origin memory measurement (tests/bench/s3_origin_rss.py) at a tiny scale.

Figures come from full runs (4 GiB, docs/performance.md); this checks that
the measurement works against a real S3 server: both children replicate
their object in full, and the object's growth is the large object's peak
minus the tiny object's, not the growth from the import baseline (which
counts the S3 client's fixed cost as if the object caused it).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.bench.s3_origin_rss import TINY_BYTES, measure
from tests.services.s3client import empty_and_delete_bucket
from tests.services.seaweedfs.server import SeaweedServer

pytestmark = pytest.mark.integration


def test_growth_is_measured_against_a_tiny_object_through_the_same_origin(
    seaweed_server: SeaweedServer, tmp_path: Path
) -> None:
    bucket = f"rss-{secrets.token_hex(4)}"
    size = 3 << 20
    try:
        figures = measure(seaweed_server.endpoint, size, tmp_path, bucket=bucket)
    finally:
        empty_and_delete_bucket(seaweed_server.endpoint.client(), bucket)
    print(json.dumps(figures))
    tiny, big = figures["tiny"], figures["big"]
    assert (tiny["source_bytes"], tiny["errors"]) == (TINY_BYTES, 0)
    assert (big["source_bytes"], big["errors"]) == (size, 0)
    assert figures["peak_rss_growth_bytes"] == big["peak"] - tiny["peak"]
    assert figures["growth_from_imports_bytes"] == big["peak"] - big["baseline"]
    # The fixed cost shows in both runs: the tiny object alone grows the old figure.
    assert figures["tiny_growth_from_imports_bytes"] == tiny["peak"] - tiny["baseline"] > 0
