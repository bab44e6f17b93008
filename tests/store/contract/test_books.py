"""The console's books (tables/books.py, migration 0016): the contract both databases pass. A put
replaces the entry under its key; reads by key return only those asked for; bad keys are refused
before any statement."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from signer.store import AddressEntry, FunctionEntry, Store, TokenEntry
from tests.store.store_testkit import T0


def _address() -> str:
    return "0x" + secrets.token_hex(20)


async def test_address_book_put_replace_read_remove(store: Store) -> None:
    one, two = _address(), _address()
    async with store.write() as w:
        await w.books.put_address(AddressEntry(one, "payroll", "", T0, "prn_a"))
        await w.books.put_address(AddressEntry(two, "treasury", "cold", T0, "prn_a"))
        await w.books.put_address(AddressEntry(one, "payroll (EU)", "monthly", T0 + timedelta(1), "prn_b"))
        with pytest.raises(ValueError):
            await w.books.put_address(AddressEntry(one.upper().replace("0X", "0x"), "x", "", T0, "p"))
        with pytest.raises(ValueError):
            await w.books.put_address(AddressEntry(_address(), "", "", T0, "p"))
    async with store.read() as r:
        (got,) = await r.books.addresses([one])
        assert (got.label, got.note, got.updated_by) == ("payroll (EU)", "monthly", "prn_b")
        assert got.updated_at == T0 + timedelta(1)
        assert await r.books.addresses([]) == []
        assert {e.address for e in await r.books.addresses()} >= {one, two}
    async with store.write() as w:
        assert await w.books.remove_address(one) is True
        assert await w.books.remove_address(one) is False
    async with store.read() as r:
        assert [e.address for e in await r.books.addresses([one, two])] == [two]


async def test_token_book_per_chain(store: Store) -> None:
    usdc = _address()
    async with store.write() as w:
        await w.books.put_token(TokenEntry(1, usdc, "USDC", 6, T0, "prn_a"))
        await w.books.put_token(TokenEntry(10, usdc, "USDC.e", 6, T0, "prn_a"))
        await w.books.put_token(TokenEntry(1, usdc, "USDC", 6, T0 + timedelta(1), "prn_b"))
        with pytest.raises(ValueError):
            await w.books.put_token(TokenEntry(1, usdc, "BAD", 78, T0, "p"))
        with pytest.raises(ValueError):
            await w.books.put_token(TokenEntry(0, usdc, "BAD", 6, T0, "p"))
    async with store.read() as r:
        got = await r.books.tokens([(1, usdc), (10, usdc), (5, usdc)])
        assert [(e.chain_id, e.symbol, e.decimals, e.updated_by) for e in got] == [
            (1, "USDC", 6, "prn_b"),
            (10, "USDC.e", 6, "prn_a"),
        ]
    async with store.write() as w:
        assert await w.books.remove_token(10, usdc) is True
    async with store.read() as r:
        assert [e.chain_id for e in await r.books.tokens([(1, usdc), (10, usdc)])] == [1]


async def test_functions_by_selector_any_or_one_contract(store: Store) -> None:
    selector = "0x" + secrets.token_hex(4)
    vault = _address()
    async with store.write() as w:
        await w.books.put_function(FunctionEntry("", selector, "payout(address,uint256)", T0, "prn_a"))
        await w.books.put_function(FunctionEntry(vault, selector, "sweep(address,uint256)", T0, "prn_a"))
        with pytest.raises(ValueError):
            await w.books.put_function(FunctionEntry("", "0x1234", "short()", T0, "p"))
    async with store.read() as r:
        got = await r.books.functions([selector])
        assert [(e.contract, e.signature) for e in got] == [
            ("", "payout(address,uint256)"),
            (vault, "sweep(address,uint256)"),
        ]
    async with store.write() as w:
        assert await w.books.remove_function(selector, vault) is True
    async with store.read() as r:
        assert [e.contract for e in await r.books.functions([selector])] == [""]
