"""The console's books: the address book, the token book and the registered function signatures.

Owns ``address_book``, ``token_book`` and ``abi_functions``: put an entry (replacing the one under the
same key), remove one, list them, and read the entries a request names in one statement per book (the
approver's page asks for the handful of addresses, token contracts and selectors it shows). Keys are
checked as the service normalises them (lowercase 0x-hex); the store decides nothing about them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, or_, select

from signer.store import schema as t
from signer.store.checks import aware, nonempty
from signer.store.records import AddressEntry, FunctionEntry, TokenEntry
from signer.store.tx import Statements, WriteStatements

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_SELECTOR = re.compile(r"0x[0-9a-f]{8}")
MAX_ENTRIES = 10_000


def _address(value: str, name: str = "address") -> None:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ValueError(f"{name} must be lowercase 0x-hex of 20 bytes")


def _address_entry(row: Any) -> AddressEntry:
    m = row._mapping
    return AddressEntry(m["address"], m["label"], m["note"], m["updated_at"], m["updated_by"])


def _token_entry(row: Any) -> TokenEntry:
    m = row._mapping
    return TokenEntry(
        int(m["chain_id"]), m["contract"], m["symbol"], int(m["decimals"]), m["updated_at"], m["updated_by"]
    )


def _function_entry(row: Any) -> FunctionEntry:
    m = row._mapping
    return FunctionEntry(m["contract"], m["selector"], m["signature"], m["updated_at"], m["updated_by"])


class BookReads:
    """Reads of the three books."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def addresses(self, only: Iterable[str] | None = None) -> list[AddressEntry]:
        """Every entry (at most ``MAX_ENTRIES``, by address), or those of ``only``."""
        a = t.address_book
        query = select(a).order_by(a.c.address).limit(MAX_ENTRIES)
        if only is not None:
            wanted = sorted(set(only))
            if not wanted:
                return []
            query = query.where(a.c.address.in_(wanted))
        return [_address_entry(row) for row in await self._tx._all(query)]

    async def tokens(self, only: Iterable[tuple[int, str]] | None = None) -> list[TokenEntry]:
        """Every entry (by chain and contract), or those of ``only`` ((chain id, contract) pairs)."""
        k = t.token_book
        query = select(k).order_by(k.c.chain_id, k.c.contract).limit(MAX_ENTRIES)
        if only is not None:
            wanted = sorted(set(only))
            if not wanted:
                return []
            query = query.where(or_(*(and_(k.c.chain_id == c, k.c.contract == a) for c, a in wanted)))
        return [_token_entry(row) for row in await self._tx._all(query)]

    async def functions(self, selectors: Iterable[str] | None = None) -> list[FunctionEntry]:
        """Every registered function (by selector, then contract), or those with one of ``selectors``."""
        f = t.abi_functions
        query = select(f).order_by(f.c.selector, f.c.contract).limit(MAX_ENTRIES)
        if selectors is not None:
            wanted = sorted(set(selectors))
            if not wanted:
                return []
            query = query.where(f.c.selector.in_(wanted))
        return [_function_entry(row) for row in await self._tx._all(query)]


class BookWrites(BookReads):
    """Writes of the three books (each put replaces the entry under the same key)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def put_address(self, entry: AddressEntry) -> None:
        _address(entry.address)
        nonempty(entry.label, "label")
        aware(entry.updated_at, "updated_at")
        await self.remove_address(entry.address)
        await self._tx._write(
            t.address_book.insert().values(
                address=entry.address,
                label=entry.label,
                note=entry.note,
                updated_at=entry.updated_at,
                updated_by=entry.updated_by,
            )
        )

    async def remove_address(self, address: str) -> bool:
        result = await self._tx._write(delete(t.address_book).where(t.address_book.c.address == address))
        return bool(result.rowcount)

    async def put_token(self, entry: TokenEntry) -> None:
        _address(entry.contract, "contract")
        nonempty(entry.symbol, "symbol")
        if not 0 <= entry.decimals <= 77 or entry.chain_id < 1:
            raise ValueError("decimals must be 0 to 77 and the chain id positive")
        aware(entry.updated_at, "updated_at")
        await self.remove_token(entry.chain_id, entry.contract)
        await self._tx._write(
            t.token_book.insert().values(
                chain_id=entry.chain_id,
                contract=entry.contract,
                symbol=entry.symbol,
                decimals=entry.decimals,
                updated_at=entry.updated_at,
                updated_by=entry.updated_by,
            )
        )

    async def remove_token(self, chain_id: int, contract: str) -> bool:
        k = t.token_book
        result = await self._tx._write(delete(k).where(k.c.chain_id == chain_id, k.c.contract == contract))
        return bool(result.rowcount)

    async def put_function(self, entry: FunctionEntry) -> None:
        if entry.contract:
            _address(entry.contract, "contract")
        if not isinstance(entry.selector, str) or not _SELECTOR.fullmatch(entry.selector):
            raise ValueError("selector must be lowercase 0x-hex of 4 bytes")
        nonempty(entry.signature, "signature")
        aware(entry.updated_at, "updated_at")
        await self.remove_function(entry.selector, entry.contract)
        await self._tx._write(
            t.abi_functions.insert().values(
                contract=entry.contract,
                selector=entry.selector,
                signature=entry.signature,
                updated_at=entry.updated_at,
                updated_by=entry.updated_by,
            )
        )

    async def remove_function(self, selector: str, contract: str = "") -> bool:
        f = t.abi_functions
        result = await self._tx._write(delete(f).where(f.c.selector == selector, f.c.contract == contract))
        return bool(result.rowcount)
