"""KMS credentials' sealed secrets: insert one, read one back by its access key id.

Owns the ``kms_credentials`` table. A row holds only the secret access key sealed under a data key that
the token's KEK wraps (sealed and opened by ``signer.services.kms``); the credential's principal, expiry
and revocation are its ``tokens`` row (kind ``kms``, the same id), so revoking the token ends it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from signer.errors import Conflict
from signer.store import schema as t
from signer.store.checks import nonempty
from signer.store.records import KmsCredentialRecord
from signer.store.tx import Statements, WriteStatements


def _credential(row: Any) -> KmsCredentialRecord:
    m = row._mapping
    return KmsCredentialRecord(
        id=m["id"],
        kek_id=m["kek_id"],
        wrapped_key=bytes(m["wrapped_key"]),
        sealed_secret=bytes(m["sealed_secret"]),
    )


class KmsCredentialReads:
    """Reads of ``kms_credentials``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, access_key_id: str) -> KmsCredentialRecord | None:
        row = await self._tx._first(select(t.kms_credentials).where(t.kms_credentials.c.id == access_key_id))
        return None if row is None else _credential(row)


class KmsCredentialWrites(KmsCredentialReads):
    """Writes of ``kms_credentials`` (in a write transaction, after its ``tokens`` row)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, record: KmsCredentialRecord) -> None:
        nonempty(record.id, "access key id")
        nonempty(record.kek_id, "kek id")
        if not record.wrapped_key or not record.sealed_secret:
            raise ValueError("a KMS credential stores its secret sealed")
        await self._tx._insert_new(
            t.kms_credentials,
            {
                "id": record.id,
                "kek_id": record.kek_id,
                "wrapped_key": record.wrapped_key,
                "sealed_secret": record.sealed_secret,
            },
            Conflict("a KMS credential with that id exists", code="kms_credential_exists"),
        )
