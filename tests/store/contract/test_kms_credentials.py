"""KMS credentials (tables/kms_credentials.py): the contract both backends pass."""

from __future__ import annotations

import secrets

import pytest

from signer.errors import Conflict
from signer.store import KmsCredentialRecord, Store
from tests.store.store_testkit import principal, token


async def test_a_credential_is_stored_sealed_beside_its_token_row(store: Store) -> None:
    service = principal()
    row = token(service.id, kind="kms")
    sealed = KmsCredentialRecord(row.id, "kek-1", secrets.token_bytes(40), secrets.token_bytes(60))
    async with store.write() as w:
        await w.principals.insert(service)
        await w.tokens.insert(row)
        await w.kms_credentials.insert(sealed)
        with pytest.raises(Conflict) as again:
            await w.kms_credentials.insert(sealed)
        with pytest.raises(ValueError):
            await w.kms_credentials.insert(KmsCredentialRecord(row.id, "kek-1", b"", b"x"))
    assert again.value.code == "kms_credential_exists"
    async with store.read() as r:
        assert await r.kms_credentials.get(row.id) == sealed
        assert await r.kms_credentials.get("AKSGMISSING") is None
        stored = await r.tokens.get(row.id)
        assert stored is not None and stored.kind == "kms"
    assert sealed.wrapped_key.hex() not in repr(sealed) and sealed.sealed_secret.hex() not in repr(sealed)
