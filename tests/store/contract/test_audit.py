"""Reading the committed audit log (tables/audit.py): the contract both backends pass."""

from __future__ import annotations

import pytest

from signer.audit import verify_chain
from signer.store import Store
from tests.store.store_testkit import event


async def test_events_are_read_in_order_in_pages_and_chain(store: Store) -> None:
    async with store.write() as w:
        for n in range(5):
            w.append_audit(event(n=n))
    async with store.read() as r:
        everything = await r.audit.events()
        first_page = await r.audit.events(limit=2)
        after = await r.audit.events(after_seq=first_page[-1].seq, limit=10)
        head = await r.audit_head()
    assert [e.seq for e in everything] == [1, 2, 3, 4, 5]
    assert first_page + after == everything
    assert head == (everything[-1].seq, everything[-1].hash)
    assert verify_chain(everything, expected_head=head).ok
    async with store.read() as r:
        with pytest.raises(ValueError):
            await r.audit.events(limit=0)
