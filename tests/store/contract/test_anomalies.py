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


async def test_a_principal_has_one_first_address_claimed(store: Store) -> None:
    """The first claim records the address; any later claim (another address, another worker) records
    nothing, and a principal with known addresses cannot claim a first one."""
    a, b = uid("prn"), uid("prn")
    async with store.write() as w:
        assert await w.anomalies.claim_first_source(a, "192.0.2.1", T0) is True
    async with store.write() as w:
        assert await w.anomalies.claim_first_source(a, "192.0.2.2", T0) is False
        assert await w.anomalies.claim_first_source(a, "192.0.2.1", T0) is False
        await w.anomalies.add_sources([(b, "192.0.2.7", T0)])
        assert await w.anomalies.claim_first_source(b, "192.0.2.8", T0) is False
    async with store.read() as r:
        assert await r.anomalies.sources_of(a) == {"192.0.2.1"}
        assert await r.anomalies.sources_of(b) == {"192.0.2.7"}
