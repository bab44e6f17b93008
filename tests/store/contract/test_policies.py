"""Policy versions, attachments and shadow decisions (tables/policies.py): the contract both backends pass."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from signer.errors import Conflict, NotFound
from signer.store import AttachmentRecord, PolicyVersionRecord, Store, Writer
from tests.store.store_testkit import T0, uid


def version(policy_id: str, n: int) -> PolicyVersionRecord:
    return PolicyVersionRecord(
        policy_id, n, f'{{"rules": [{n}]}}', f"{n:064x}", "prn_admin", T0 + timedelta(n)
    )


def attachment(policy_id: str, n: int, *, scope: str | None = "acme", mode: str = "live") -> AttachmentRecord:
    return AttachmentRecord(uid("att"), policy_id, n, scope, None, None, mode, "prn_admin", T0 + timedelta(n))


async def test_versions_are_immutable_and_read_back(store: Store) -> None:
    async with store.write() as w:
        before = w.epoch
        await w.policies.insert_version(version("limits", 1))
        await w.policies.insert_version(version("limits", 2))
        await w.policies.insert_version(version("other", 1))
        with pytest.raises(Conflict) as again:
            await w.policies.insert_version(version("limits", 2))
        assert w.epoch == before + 3
    assert again.value.code == "policy_version_exists"
    async with store.read() as r:
        assert await r.policies.get_version("limits", 2) == version("limits", 2)
        assert await r.policies.get_version("limits", 3) is None
        assert await r.policies.versions("limits") == [version("limits", 1), version("limits", 2)]
        latest = {v.policy_id: v.version for v in await r.policies.latest_versions()}
        assert latest == {"limits": 2, "other": 1}


async def test_attaching_replaces_the_same_policy_at_the_same_place_and_mode(store: Store) -> None:
    first, second = attachment("limits", 1), attachment("limits", 2)
    shadow = attachment("limits", 2, mode="shadow")
    async with store.write() as w:
        await w.policies.insert_version(version("limits", 1))
        await w.policies.insert_version(version("limits", 2))
        assert await w.policies.attach(first) == []
        assert await w.policies.attach(shadow) == []  # another mode: both stay
        assert await w.policies.attach(second) == [first.id]

    async def unknown_version(w: Writer) -> list[str]:
        return await w.policies.attach(attachment("limits", 9))

    with pytest.raises(NotFound) as missing:
        await store.submit(unknown_version)
    assert missing.value.code == "policy_not_found"
    async with store.read() as r:
        assert {a.id for a in await r.policies.attachments()} == {shadow.id, second.id}
        assert len(await r.policies.attachments(include_detached=True)) == 3
        assert (await r.policies.get_attachment(first.id)).detached_at == second.created_at
        documents = {a.id: v.document for a, v in await r.policies.attached_documents()}
        assert documents == {
            shadow.id: version("limits", 2).document,
            second.id: version("limits", 2).document,
        }
    async with store.write() as w:
        before = w.epoch
        assert await w.policies.detach(second.id, T0) is True
        assert await w.policies.detach(second.id, T0) is False
        assert w.epoch == before + 1


async def test_shadow_decisions_are_written_at_commit_and_dropped_with_a_failed_unit(store: Store) -> None:
    async with store.write() as w:
        await w.policies.insert_version(version("limits", 1))
        shadow = attachment("limits", 1, mode="shadow")
        await w.policies.attach(shadow)

    def record(w: Writer, differs: bool, request_id: str) -> None:
        w.policies.record_shadow(
            shadow.id, T0, request_id, "allow", "deny" if differs else "allow", differs, {"reasons": ["r"]}
        )

    async def kept(w: Writer) -> None:
        record(w, True, "req-kept")
        record(w, False, "req-same")

    async def dropped(w: Writer) -> None:
        record(w, True, "req-dropped")
        raise RuntimeError("unit fails after buffering")

    results = await asyncio.gather(store.submit(kept), store.submit(dropped), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], RuntimeError)
    async with store.read() as r:
        report = await r.policies.shadow_report(shadow.id)
    assert report["evaluated"] == 2 and report["differing"] == 1
    assert [d["request_id"] for d in report["recent_differences"]] == ["req-kept"]
    assert report["recent_differences"][0]["candidate_decision"] == {"reasons": ["r"]}
