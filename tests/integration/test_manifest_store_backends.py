"""The ManifestStore contract (tests/unit/test_manifest_store.py) on every
backend: the format 2 layout and the format 3 segments over fs, moto and
SeaweedFS (listing pages of 7, ranged reads, conditional PUTs of a real server)."""

from __future__ import annotations

import pytest

from replicator.store.backend import Backend
from replicator.store.format import StoreConfig
from replicator.store.manifest_store import ManifestStore, manifest_store
from tests.unit import test_manifest_store as contract

pytestmark = pytest.mark.integration


@pytest.fixture(params=[2, 3])
def manifests(request: pytest.FixtureRequest, backend: Backend) -> ManifestStore:
    return manifest_store(backend, StoreConfig(contract.PARAMS, version=request.param))


async def test_put_many_answers_and_reads(manifests: ManifestStore) -> None:
    await contract.test_put_many_answers_each_manifest_and_is_readable(manifests)


async def test_listings_group_keys_and_order_versions(manifests: ManifestStore) -> None:
    await contract.test_listings_group_keys_and_order_versions(manifests)


async def test_versions_at_finds_one_key_at_one_event_time(manifests: ManifestStore) -> None:
    await contract.test_versions_at_finds_one_key_at_one_event_time(manifests)
