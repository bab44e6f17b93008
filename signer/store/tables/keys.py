"""Key records: the store's view of the HSM's keys (id, HSM handle, curve, address, state, scope).

Owns the ``keys`` table: insert, state changes (which move the facts epoch), and reads by id, by HSM id
and in pages. It holds no key material: only the HSM holds keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.checks import aware, nonempty, one_of
from signer.store.records import KEY_STATES, KeyRecord
from signer.store.tx import Statements, WriteStatements


def _key(row: Any) -> KeyRecord:
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        label=m["label"],
        curve=m["curve"],
        public_key=m["public_key"],
        address=m["address"],
        scope=m["scope"],
        tags=list(m["tags"]),
        state=m["state"],
        hsm_id=m["hsm_id"],
        attributes=dict(m["attributes"]),
        created_by=m["created_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        compromised_at=m["compromised_at"],
    )


class KeyReads:
    """Reads of ``keys``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, key_id: str) -> KeyRecord | None:
        row = await self._tx._first(select(t.keys).where(t.keys.c.id == key_id))
        return None if row is None else _key(row)

    async def by_hsm_id(self, hsm_id: str) -> KeyRecord | None:
        row = await self._tx._first(select(t.keys).where(t.keys.c.hsm_id == hsm_id))
        return None if row is None else _key(row)

    async def all(
        self, *, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[KeyRecord]:
        """Keys ordered by id; pass the last id seen as ``after`` for the next page."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        query: Select[Any] = select(t.keys)
        if state is not None:
            query = query.where(t.keys.c.state == state)
        if after is not None:
            query = query.where(t.keys.c.id > after)
        rows = await self._tx._all(query.order_by(t.keys.c.id).limit(limit))
        return [_key(r) for r in rows]


class KeyWrites(KeyReads):
    """Writes of ``keys`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, key: KeyRecord) -> None:
        """Register a key; ``Conflict(key_exists)`` if its id or hsm_id is taken."""
        for name in ("id", "label", "curve", "public_key", "scope", "hsm_id"):
            nonempty(getattr(key, name), f"key {name}")
        one_of(key.state, KEY_STATES, "key state")
        aware(key.created_at, "created_at")
        aware(key.updated_at, "updated_at")
        await self._tx._insert_new(
            t.keys,
            {
                "id": key.id,
                "label": key.label,
                "curve": key.curve,
                "public_key": key.public_key,
                "address": key.address,
                "scope": key.scope,
                "tags": list(key.tags),
                "state": key.state,
                "hsm_id": key.hsm_id,
                "attributes": dict(key.attributes),
                "created_by": key.created_by,
                "created_at": key.created_at,
                "updated_at": key.updated_at,
                "compromised_at": key.compromised_at,
            },
            Conflict("a key with that id or token object exists", code="key_exists"),
        )

    async def set_state(
        self,
        key_id: str,
        state: str,
        now: datetime,
        *,
        expected: str | None = None,
        compromised_at: datetime | None = None,
    ) -> None:
        """Change a key's state; bumps the epoch on change; NotFound(key_not_found) if unknown.

        With ``expected``: only from that state (a compare-and-set), else Conflict(key_state_changed);
        ``compromised_at`` is recorded with it when given (a compromise's date). Which transitions are
        allowed is the keys service's to decide (``signer.services.key_states``), not the store's."""
        one_of(state, KEY_STATES, "key state")
        aware(now, "now")
        if compromised_at is not None:
            aware(compromised_at, "compromised_at")
        c = t.keys.c
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if compromised_at is not None:
            values["compromised_at"] = compromised_at
        where = [c.id == key_id, c.state != state]
        if expected is not None:
            one_of(expected, KEY_STATES, "key state")
            where.append(c.state == expected)
        result = await self._tx._write(update(t.keys).where(*where).values(**values))
        if result.rowcount:
            self._tx.bump_epoch()
            return
        current = await self.get(key_id)
        if current is None:
            raise NotFound("no such key", code="key_not_found")
        if expected is not None and current.state != expected:
            raise Conflict("the key's state changed meanwhile", code="key_state_changed")
