"""Secrets (tables/secrets.py): the contract both backends pass. Values are opaque sealed bytes here."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import pytest

from signer.errors import Conflict, NotFound
from signer.store import SecretRecord, SecretVersionRecord, Store
from tests.store.store_testkit import T0, uid


def secret(folder: str = "acme/payments", name: str | None = None, **kw) -> SecretRecord:  # type: ignore[no-untyped-def]
    return SecretRecord(
        id=kw.pop("id", uid("sec")),
        name=uid("db") if name is None else name,
        folder=folder,
        description="primary database",
        tags=["production", "db"],
        category=kw.pop("category", "database"),
        owner_type="group",
        owner="dbas",
        consumers=["billing-api"],
        origin="provided",
        generation=None,
        current_version=1,
        created_at=T0,
        created_by="prn_admin",
        updated_at=T0,
        updated_by="prn_admin",
    )


def version(secret_id: str, number: int = 1) -> SecretVersionRecord:
    return SecretVersionRecord(
        secret_id=secret_id,
        version=number,
        kek_id="ab" * 16,
        wrapped_key=os.urandom(40),
        sealed_fields={"username": os.urandom(40), "password": os.urandom(50)},
        created_at=T0 + timedelta(minutes=number),
        created_by="prn_admin",
    )


async def test_secret_and_versions_round_trip(store: Store) -> None:
    record = secret()
    first = version(record.id)
    async with store.write() as w:
        await w.secrets.insert(record, first)
    async with store.read() as r:
        assert await r.secrets.get(record.id) == record
        assert await r.secrets.by_name(record.folder, record.name) == record
        assert await r.secrets.version(record.id, 1) == first
        assert await r.secrets.version(record.id, 2) is None
    second = version(record.id, 2)
    async with store.write() as w:
        await w.secrets.add_version(second)
        with pytest.raises(Conflict) as stale:
            await w.secrets.add_version(version(record.id, 2))
        with pytest.raises(NotFound):
            await w.secrets.add_version(version("sec_missing", 2))
    assert stale.value.code == "secret_version_exists"
    async with store.read() as r:
        current = await r.secrets.get(record.id)
        assert current is not None and current.current_version == 2
        assert [v.version for v in await r.secrets.versions(record.id)] == [1, 2]
        assert await r.secrets.version(record.id, 2) == second


async def test_names_are_unique_per_folder(store: Store) -> None:
    name = uid("stripe")
    record = secret(name=name)
    async with store.write() as w:
        await w.secrets.insert(record, version(record.id))
        other_folder = secret(folder="acme/other", name=name)
        await w.secrets.insert(other_folder, version(other_folder.id))
    async with store.write() as w:
        again = secret(name=name)
        with pytest.raises(Conflict) as taken:
            await w.secrets.insert(again, version(again.id))
    assert taken.value.code == "secret_exists"


async def test_metadata_fetch_and_delete(store: Store) -> None:
    record = secret()
    async with store.write() as w:
        await w.secrets.insert(record, version(record.id))
        later = T0 + timedelta(hours=1)
        await w.secrets.update_metadata(record.id, {"description": "moved", "tags": ["x"]}, later, "prn_b")
        await w.secrets.record_fetch(record.id, later, "prn_c")
        with pytest.raises(ValueError):
            await w.secrets.update_metadata(record.id, {"name": "renamed"}, later, "prn_b")
        with pytest.raises(NotFound):
            await w.secrets.update_metadata("sec_missing", {"description": "x"}, later, "prn_b")
    async with store.read() as r:
        assert await r.secrets.get(record.id) == replace(
            record,
            description="moved",
            tags=["x"],
            updated_at=later,
            updated_by="prn_b",
            last_fetched_at=later,
            last_fetched_by="prn_c",
            revision=2,  # the metadata change moved it; a fetch does not
        )
    async with store.write() as w:
        assert await w.secrets.delete(record.id) is True
        assert await w.secrets.delete(record.id) is False
    async with store.read() as r:
        assert await r.secrets.get(record.id) is None
        assert await r.secrets.versions(record.id) == []


async def test_listing_under_a_folder_prefix(store: Store) -> None:
    org = uid("org")
    inside = [secret(folder=f"{org}/a"), secret(folder=f"{org}/a/b"), secret(folder=org)]
    outside = [secret(folder=f"{org}/ab"), secret(folder=f"{org}x/a")]
    async with store.write() as w:
        for record in inside + outside:
            await w.secrets.insert(record, version(record.id))
    async with store.read() as r:
        under_a = {s.id for s in await r.secrets.under(f"{org}/a")}
        assert under_a == {inside[0].id, inside[1].id}
        page = await r.secrets.under(org, limit=2)
        rest = await r.secrets.under(org, after=page[-1].id)
        assert {s.id for s in page + rest} == {s.id for s in inside + outside[:1]}


async def test_version_states_promotion_and_check_and_set(store: Store) -> None:
    """Staged versions, promotion, overlap, disable/enable/destroy and revisions (migration 0010)."""
    record = secret()
    later = T0 + timedelta(hours=1)
    async with store.write() as w:
        await w.secrets.insert(record, version(record.id))
        # A staged version 2 leaves version 1 current; the revision moves.
        await w.secrets.add_version(replace(version(record.id, 2), state="staged"), if_revision=1)
    async with store.write() as w:
        with pytest.raises(Conflict) as stale:
            await w.secrets.add_version(version(record.id, 3), current_was=1, if_revision=1)
    assert stale.value.code == "if_match_failed"
    async with store.read() as r:
        got = await r.secrets.get(record.id)
        assert got is not None and (got.current_version, got.revision) == (1, 2)
        assert await r.secrets.latest_version(record.id) == 2
        assert await r.secrets.version_state(record.id, 2) == "staged"
    async with store.write() as w:
        previous = await w.secrets.promote(
            record.id, 2, later, "prn_b", if_revision=2, previous_until=later + timedelta(minutes=5)
        )
        assert previous == 1
        with pytest.raises(Conflict) as twice:
            await w.secrets.promote(record.id, 2, later, "prn_b")
    assert twice.value.code == "secret_version_not_staged"
    async with store.read() as r:
        got = await r.secrets.get(record.id)
        assert got is not None and (got.current_version, got.revision) == (2, 3)
        first = await r.secrets.version(record.id, 1)
        assert first is not None and first.disable_at == later + timedelta(minutes=5)
        assert await r.secrets.overlaps_ended(later) == []
        assert await r.secrets.overlaps_ended(later + timedelta(minutes=5)) == [(record.id, 1)]
    async with store.write() as w:
        moved = await w.secrets.set_version_state(
            record.id, 1, "disabled", from_states=frozenset({"enabled"}), now=later, by=None, reason="x"
        )
        again = await w.secrets.set_version_state(
            record.id, 1, "disabled", from_states=frozenset({"enabled"}), now=later, by=None, reason="x"
        )
        assert (moved, again) == (True, False)
    async with store.read() as r:
        assert await r.secrets.overlaps_ended(later + timedelta(days=1)) == []
    async with store.write() as w:
        assert await w.secrets.set_version_state(
            record.id,
            1,
            "destroyed",
            from_states=frozenset({"disabled"}),
            now=later,
            by="prn_b",
            reason="leaked",
        )
    async with store.read() as r:
        gone = await r.secrets.version(record.id, 1)
        assert gone is not None and gone.state == "destroyed"
        assert gone.wrapped_key == b"" and gone.sealed_fields == {}
        assert (gone.reason, gone.state_changed_by) == ("leaked", "prn_b")


async def test_rotations_due_and_overdue_once(store: Store) -> None:
    record = replace(secret(), rotation_interval_seconds=60, rotation_due_at=T0 + timedelta(minutes=1))
    async with store.write() as w:
        await w.secrets.insert(record, version(record.id))
    async with store.read() as r:
        assert record.id not in [s.id for s in await r.secrets.rotations_due(T0)]
        due = [s for s in await r.secrets.rotations_due(T0 + timedelta(minutes=1)) if s.id == record.id]
    assert len(due) == 1
    async with store.write() as w:
        assert await w.secrets.note_overdue(record.id, due[0].revision, T0 + timedelta(minutes=2))
        # Another worker that read the same revision does nothing.
        assert not await w.secrets.note_overdue(record.id, due[0].revision, T0 + timedelta(minutes=2))


async def test_whole_secret_state_moves_revision_and_epoch(store: Store) -> None:
    """A secret's own state (migration 0019): active or disabled, idempotent, check-and-set, and each
    change moves the facts epoch (other workers' cached records go)."""
    record = secret()
    later = T0 + timedelta(hours=2)
    async with store.write() as w:
        await w.secrets.insert(record, version(record.id))
    async with store.read() as r:
        got = await r.secrets.get(record.id)
        assert got is not None and got.state == "active" and got.state_changed_at is None
        epoch = await r.epoch()
    async with store.write() as w:
        with pytest.raises(Conflict) as stale:
            await w.secrets.set_state(record.id, "disabled", now=later, by="prn_b", reason="x", if_revision=7)
    assert stale.value.code == "if_match_failed"
    async with store.write() as w:
        assert await w.secrets.set_state(
            record.id, "disabled", now=later, by="prn_b", reason="leaked", if_revision=1
        )
        assert not await w.secrets.set_state(record.id, "disabled", now=later, by="prn_b", reason=None)
        with pytest.raises(NotFound):
            await w.secrets.set_state("sec_missing", "disabled", now=later, by=None, reason=None)
        with pytest.raises(ValueError):
            await w.secrets.set_state(record.id, "paused", now=later, by=None, reason=None)
    async with store.read() as r:
        got = await r.secrets.get(record.id)
        assert got is not None
        assert (got.state, got.state_changed_at, got.state_changed_by, got.state_reason) == (
            "disabled",
            later,
            "prn_b",
            "leaked",
        )
        assert got.revision == 2
        assert await r.epoch() > epoch
    async with store.write() as w:
        assert await w.secrets.set_state(record.id, "active", now=later, by="prn_c", reason=None)
    async with store.read() as r:
        got = await r.secrets.get(record.id)
        assert got is not None and (got.state, got.state_changed_by, got.revision) == ("active", "prn_c", 3)


async def test_a_disabled_secret_is_not_due_for_rotation(store: Store) -> None:
    record = replace(secret(), rotation_interval_seconds=60, rotation_due_at=T0 + timedelta(minutes=1))
    later = T0 + timedelta(minutes=5)
    async with store.write() as w:
        await w.secrets.insert(record, version(record.id))
        assert await w.secrets.set_state(record.id, "disabled", now=T0, by="prn_b", reason="leaked")
    async with store.read() as r:
        assert record.id not in [s.id for s in await r.secrets.rotations_due(later)]
    async with store.write() as w:
        assert await w.secrets.set_state(record.id, "active", now=T0, by="prn_b", reason=None)
    async with store.read() as r:
        assert record.id in [s.id for s in await r.secrets.rotations_due(later)]
