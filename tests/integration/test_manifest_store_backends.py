"""The ManifestStore contract (tests/unit/test_manifest_store.py) on every
backend: fs, moto and SeaweedFS, with small listing pages, for every store
format in that module's ``stores``."""

from __future__ import annotations

import pytest

from tests.integration.conftest import StoreUnderTest
from tests.unit.test_manifest_store import stores
from tests.unit.test_manifest_store import (
    test_listings_group_keys_and_order_versions as listings_contract,
)
from tests.unit.test_manifest_store import (
    test_put_many_answers_each_manifest_and_is_readable as put_many_contract,
)
from tests.unit.test_manifest_store import (
    test_versions_at_finds_one_key_at_one_event_time as versions_at_contract,
)

pytestmark = pytest.mark.integration


CONTRACT = {
    "put_many": put_many_contract,
    "listings": listings_contract,
    "versions_at": versions_at_contract,
}


@pytest.mark.parametrize("case", sorted(CONTRACT))
@pytest.mark.parametrize("fmt", sorted(stores))
async def test_the_manifest_store_contract_on_every_backend(
    store: StoreUnderTest, fmt: str, case: str
) -> None:
    await CONTRACT[case](stores[fmt](store.backend))
    print(f"[{store.kind}] {fmt} {case}: as on a directory (listing pages of a few names)")
