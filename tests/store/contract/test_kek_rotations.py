"""KEK rotations (tables/kek_rotations.py): the contract both backends pass. Wrapped keys are opaque."""

from __future__ import annotations

import os
from dataclasses import replace

from signer.store import Store
from signer.store.tables.kek_rotations import KekRotationRecord
from tests.store.contract.test_secrets import secret, version
from tests.store.store_testkit import T0, uid

OLD, NEW, NEWER = "ab" * 16, "cd" * 16, "ef" * 16


def rotation(scope: str, old: str = OLD, new: str = NEW) -> KekRotationRecord:
    return KekRotationRecord(
        id=uid("kr"),
        scope=scope,
        old_kek_id=old,
        new_kek_id=new,
        state="switching",
        total=0,
        rewrapped=0,
        retired=[],
        destroyed=[],
        started_at=T0,
        started_by="prn_admin",
        updated_at=T0,
        finished_at=None,
    )


async def test_pending_versions_rewrap_with_check_and_set(store: Store) -> None:
    scope = uid("org")
    records = [secret(folder=f"{scope}/app"), secret(folder=scope), secret(folder=f"{scope}x/app")]
    for record in records:
        async with store.write() as w:
            await w.secrets.insert(record, version(record.id))
            await w.secrets.add_version(version(record.id, 2))
    job = rotation(scope)
    async with store.write() as w:
        await w.kek_rotations.insert(job)
        assert await w.kek_rotations.set_state(job.id, "rewrapping", T0, expect="switching", total=4)
        assert not await w.kek_rotations.set_state(job.id, "rewrapping", T0, expect="switching")
    async with store.read() as r:
        # The scope's own folder and those below it; not a folder that only starts with its name.
        assert await r.kek_rotations.count_pending(scope, NEW) == 4
        first = await r.kek_rotations.pending(scope, NEW, 3)
        rest = await r.kek_rotations.pending(scope, NEW, 3, after=(first[-1].secret_id, first[-1].version))
        assert len(first) == 3 and len(rest) == 1
        assert {p.secret_id for p in first + rest} == {records[0].id, records[1].id}
        assert (await r.kek_rotations.unfinished())[-1].id == job.id
    item = first[0]
    rewrapped = os.urandom(40)
    async with store.write() as w:
        # A row whose pair moved since it was read is left alone.
        assert not await w.kek_rotations.rewrap(
            job.id, replace(item, wrapped_key=os.urandom(40)), NEW, rewrapped, T0
        )
        assert await w.kek_rotations.rewrap(job.id, item, NEW, rewrapped, T0)
        assert not await w.kek_rotations.rewrap(job.id, item, NEW, rewrapped, T0)  # done once
    async with store.read() as r:
        row = await r.secrets.version(item.secret_id, item.version)
        assert row is not None and (row.kek_id, row.wrapped_key) == (NEW, rewrapped)
        assert row.bound_kek_id == OLD and row.aad_kek_id == OLD
        assert await r.kek_rotations.count_pending(scope, NEW) == 3
        assert await r.kek_rotations.count_under(NEW) == 1
        stored = await r.kek_rotations.get(job.id)
        assert stored is not None and stored.rewrapped == 1 and stored.total == 4
    # A second rotation keeps the binding of the first seal.
    async with store.read() as r:
        (again,) = [p for p in await r.kek_rotations.pending(scope, NEWER, 10) if p.kek_id == NEW]
    async with store.write() as w:
        assert await w.kek_rotations.rewrap(job.id, again, NEWER, os.urandom(40), T0)
    async with store.read() as r:
        row = await r.secrets.version(item.secret_id, item.version)
        assert row is not None and row.kek_id == NEWER and row.aad_kek_id == OLD
        untouched = await r.secrets.version(records[2].id, 1)
        assert untouched is not None and untouched.bound_kek_id is None and untouched.aad_kek_id == OLD
    async with store.write() as w:
        assert await w.kek_rotations.set_state(job.id, "finished", T0, expect="rewrapping", retired=[OLD])
        await w.kek_rotations.set_destroyed(job.id, [OLD], T0)
    async with store.read() as r:
        latest = await r.kek_rotations.latest(scope)
        assert latest is not None and latest.state == "finished" and latest.finished_at == T0
        assert latest.retired == [OLD] and latest.destroyed == [OLD]
        assert job.id not in {j.id for j in await r.kek_rotations.unfinished()}
