"""Usage aggregates (tables/usage.py, migration 0015): the contract both databases pass. Adding a batch
twice sums the counts and keeps the latest time and the version range."""

from __future__ import annotations

from datetime import timedelta

from signer.store import FetchCount, GrantUse, ReferenceUse, Store
from tests.store.contract.test_secrets import secret, version
from tests.store.store_testkit import T0, uid


async def test_fetch_counts_sum_per_principal_and_workload(store: Store) -> None:
    sid = uid("sec")
    day = 20000
    first = FetchCount(sid, day, "prn_a", "billing", 2, T0, 1)
    later = FetchCount(sid, day, "prn_a", "billing", 3, T0 + timedelta(hours=1), 2)
    other = FetchCount(sid, day + 1, "prn_b", "", 1, T0 + timedelta(days=1), 2)
    async with store.write() as w:
        await w.usage.add(fetches=[first])
    async with store.write() as w:
        await w.usage.add(fetches=[later, other])
    async with store.read() as r:
        rows = {(f.principal_id, f.workload): f for f in await r.usage.fetches_of(sid, day)}
        assert rows[("prn_a", "billing")].fetches == 5
        assert rows[("prn_a", "billing")].last_at == T0 + timedelta(hours=1)
        assert rows[("prn_a", "billing")].last_version == 2
        assert rows[("prn_b", "")].fetches == 1
        assert [f.principal_id for f in await r.usage.fetches_of(sid, day + 1)] == ["prn_b"]
        assert [(f.day, f.fetches) for f in await r.usage.daily(sid, 0)] == [(day + 1, 1), (day, 5)]
        assert len(await r.usage.daily(sid, 0, limit=1)) == 1
        assert [f.secret_id for f in await r.usage.fetches_by("prn_b", 0, 10)] == [sid]


async def test_grant_uses_keep_the_version_range(store: Store) -> None:
    gid = uid("grt")
    async with store.write() as w:
        await w.usage.add(grants=[GrantUse(gid, "prn_a", "secret", "sec_x", 1, T0, T0, 2, 2)])
        await w.usage.add(
            grants=[
                GrantUse(gid, "prn_a", "secret", "sec_x", 4, T0 - timedelta(days=1), T0 + timedelta(1), 1, 1)
            ]
        )
    async with store.read() as r:
        (use,) = await r.usage.grant_uses(grant_ids=[gid])
        assert (use.uses, use.min_version, use.max_version) == (5, 1, 2)
        assert (use.first_at, use.last_at) == (T0 - timedelta(days=1), T0 + timedelta(1))
        assert (await r.usage.grant_last_used())[gid] == T0 + timedelta(1)
        assert gid in await r.usage.used_grant_ids()
        assert "prn_a" in await r.usage.principals_using()
        assert await r.usage.grant_uses(resource_id="sec_x", principal_id="prn_a") == [use]


async def test_references_and_bulk_reads(store: Store) -> None:
    held = secret(folder=uid("org"))
    async with store.write() as w:
        await w.secrets.insert(held, version(held.id))
        ref = ReferenceUse(held.id, "prn_a", f"secret://{held.folder}/{held.name}", "", 1, T0)
        await w.usage.add(references=[ref, ref])
    async with store.read() as r:
        (seen,) = await r.usage.references_to(held.id)
        assert seen.uses == 2
        _, every = await r.usage.secret_facts()
        facts = {f.id: f for f in every}
        assert facts[held.id].version_created_at == version(held.id).created_at
        assert facts[held.id].last_fetched_at is None
        _, tagged = await r.usage.secret_facts(tags=["production"])
        assert held.id in {f.id for f in tagged}
        assert held.id not in {f.id for f in (await r.usage.secret_facts(tags=["prod"]))[1]}
        count, some = await r.usage.secret_facts(categories=["database"], limit=1)
        assert count >= 1 and len(some) == 1
        assert held.id in {
            f.id for f in (await r.usage.secret_facts(single_version_before=T0 + timedelta(1)))[1]
        }
        assert held.id not in {f.id for f in (await r.usage.secret_facts(single_version_before=T0))[1]}
        assert held.id not in {f.id for f in (await r.usage.secret_facts(origin="generated"))[1]}
        assert await r.usage.secret_facts(with_interval=True) == (0, [])
        assert (await r.usage.folder_counts())[held.folder] == 1
        count, rows = await r.usage.stale_secrets(None, 100000)
        assert held.id in {row[0] for row in rows} and count >= 1
