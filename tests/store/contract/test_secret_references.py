"""Secrets held by reference (tables/secrets.py, migration 0007): the contract both databases pass. The
record carries the backend and the reference and no sealed version; a sealed secret keeps neither."""

from __future__ import annotations

from dataclasses import replace

import pytest

from signer.errors import Conflict
from signer.store import Store
from tests.store.contract.test_secrets import secret, version


async def test_reference_round_trips_without_versions(store: Store) -> None:
    held = replace(
        secret(), current_version=0, backend="aws_secrets_manager", reference="arn:aws:secretsmanager:x"
    )
    sealed = secret()
    async with store.write() as w:
        await w.secrets.insert(held, None)
        await w.secrets.insert(sealed, version(sealed.id))
    async with store.read() as r:
        assert await r.secrets.get(held.id) == held
        assert await r.secrets.versions(held.id) == []
        got = await r.secrets.get(sealed.id)
        assert got is not None and (got.backend, got.reference) == ("sealed", None)
        listed = {s.id: s.backend for s in await r.secrets.under("acme")}
    assert listed[held.id] == "aws_secrets_manager" and listed[sealed.id] == "sealed"
    # The name rule is the same for both kinds of record.
    async with store.write() as w:
        with pytest.raises(Conflict):
            await w.secrets.insert(replace(held, id="sec_dup_ref"), None)
    async with store.write() as w:
        with pytest.raises(ValueError):
            await w.secrets.insert(replace(held, id="sec_v", name="v2"), version("sec_v"))
        assert await w.secrets.delete(held.id)
