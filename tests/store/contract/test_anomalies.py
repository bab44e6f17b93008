"""Known source addresses (tables/anomalies.py, migration 0016): the contract both databases pass. An
address added twice keeps one row; addresses belong to their principal alone."""

from __future__ import annotations

from datetime import timedelta

from signer.store import Store
from tests.store.store_testkit import T0, uid


async def test_sources_are_kept_per_principal_once(store: Store) -> None:
    a, b = uid("prn"), uid("prn")
    async with store.write() as w:
        await w.anomalies.add_sources([(a, "192.0.2.1", T0), (a, "2001:db8::1", T0)])
        await w.anomalies.add_sources([])
    async with store.write() as w:
        await w.anomalies.add_sources([(a, "192.0.2.1", T0 + timedelta(hours=1)), (b, "192.0.2.9", T0)])
    async with store.read() as r:
        assert await r.anomalies.sources_of(a) == {"192.0.2.1", "2001:db8::1"}
        assert await r.anomalies.sources_of(b) == {"192.0.2.9"}
        assert await r.anomalies.sources_of(uid("prn")) == set()
