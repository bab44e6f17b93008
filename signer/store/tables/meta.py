"""Settings the service keeps in its own database (name -> text), such as the readiness probe's time.

Owns the ``meta`` table. Nothing secret goes here.
"""

from __future__ import annotations

from sqlalchemy import select, update

from signer.errors import Conflict
from signer.store import schema as t
from signer.store.checks import nonempty
from signer.store.tx import Statements, WriteStatements


class MetaReads:
    """Reads of ``meta``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, name: str) -> str | None:
        row = await self._tx._first(select(t.meta.c.value).where(t.meta.c.name == name))
        return None if row is None else str(row[0])


class MetaWrites(MetaReads):
    """Writes of ``meta`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def set(self, name: str, value: str, *, replace: bool = False) -> None:
        """Store a setting; without ``replace`` an existing name is ``Conflict(meta_exists)``."""
        nonempty(name, "meta name")
        if not isinstance(value, str):
            raise ValueError("meta value must be a string")
        if replace:
            result = await self._tx._write(update(t.meta).where(t.meta.c.name == name).values(value=value))
            if result.rowcount:
                return
        await self._tx._insert_new(
            t.meta, {"name": name, "value": value}, Conflict("setting exists", code="meta_exists")
        )
