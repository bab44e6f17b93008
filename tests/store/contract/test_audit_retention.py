"""Audit archives and the prune (tables/audit_retention.py): the contract both backends pass."""

from __future__ import annotations

from datetime import UTC, datetime

from signer.audit import AuditEvent, Outcome
from signer.store import Store
from signer.store.tables.audit_retention import ArchiveRecord


async def test_archives_and_a_prune_keep_the_boundary(store: Store) -> None:
    now = datetime.now(UTC)
    async with store.write() as w:
        for n in range(10):
            w.append_audit(
                AuditEvent.of("t.e", at=now, outcome=Outcome.ALLOWED, actor=None, request_id=str(n))
            )
    async with store.read() as r:
        base = await r.retention.first_retained_seq()
        head, _ = await r.audit_head()
        assert base is not None and await r.retention.last_seq_before(now) < base
        assert await r.retention.checkpoint_size_at_most(head) is None
    record = ArchiveRecord("ab" * 32, base, base + 5, now, "prn_x")
    async with store.write() as w:
        await w.retention.add_archive(record)
        await w.retention.add_archive(record)  # the same bytes twice: one row
        deleted = await w.retention.prune(base + 5, [(0, base + 5, b"\x01" * 32)])
    assert deleted == 6
    async with store.read() as r:
        assert await r.retention.archive("ab" * 32) == record
        assert await r.retention.archive("cd" * 32) is None
        assert await r.retention.first_retained_seq() == base + 6
        assert await r.checkpoints.nodes([(0, base + 5)]) == {(0, base + 5): b"\x01" * 32}
