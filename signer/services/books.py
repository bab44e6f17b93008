"""The console's books: operator-maintained names for what a request shows an approver.

The address book (an address's label and note: "payroll, from your address book"), the token book (an
ERC-20 contract's symbol and decimals per chain, so amounts read "250 USDC (250,000,000 base units)")
and registered functions (one canonical signature, or a contract ABI's functions: the called function
decoded on the approver's page). Admins write (each change audited as ``books.*``); admins, approvers
and auditors read. ``notes_for`` answers the handful of entries one request names, in one read, for
``signer.http.console_present``; ``notes_for_many`` those of a whole page of requests in the same few
reads (the console's list). Names are shown, never trusted: policy decides on addresses and
selectors alone, so a wrong label misleads nobody's policy, and every label is escaped where shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from signer.audit import EventTarget
from signer.errors import InvalidRequest, NotFound
from signer.eth.functions import abi_functions, decode_call, parse_signature, selector_of
from signer.identity import Role
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.store import AddressEntry, FunctionEntry, Store, TokenEntry, Writer

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SELECTOR = re.compile(r"0x[0-9a-fA-F]{8}")
_SYMBOL = re.compile(r"[A-Za-z0-9.$_+-]{1,20}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
MAX_LABEL = 100
MAX_NOTE = 500
READERS = (Role.ADMIN, Role.APPROVER, Role.AUDITOR)


def address(value: Any, field: str = "address") -> str:
    """A 20-byte 0x-hex address, lowercased; InvalidRequest otherwise (never echoing it)."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise InvalidRequest(f"{field} must be 0x and 40 hex digits", code="invalid_address", field=field)
    return value.lower()


def _text(value: Any, field: str, limit: int, *, empty: bool) -> str:
    if value is None and empty:
        return ""
    if (
        not isinstance(value, str)
        or len(value) > limit
        or (not value.strip() and not empty)
        or _CONTROL.search(value)
    ):
        raise InvalidRequest(
            f"{field} is text of at most {limit} characters without control or direction characters",
            code=f"invalid_{field}",
            field=field,
        )
    return value.strip()


def _selector(value: Any) -> str:
    if not isinstance(value, str) or not _SELECTOR.fullmatch(value):
        raise InvalidRequest(
            "selector must be 0x and 8 hex digits", code="invalid_selector", field="selector"
        )
    return value.lower()


def _address_view(e: AddressEntry) -> dict[str, Any]:
    return {
        "address": e.address,
        "label": e.label,
        "note": e.note,
        "updated_at": iso(e.updated_at),
        "updated_by": e.updated_by,
    }


def _token_view(e: TokenEntry) -> dict[str, Any]:
    return {
        "chain_id": e.chain_id,
        "contract": e.contract,
        "symbol": e.symbol,
        "decimals": e.decimals,
        "updated_at": iso(e.updated_at),
        "updated_by": e.updated_by,
    }


def _function_view(e: FunctionEntry) -> dict[str, Any]:
    return {
        "selector": e.selector,
        "signature": e.signature,
        "contract": e.contract or None,
        "updated_at": iso(e.updated_at),
        "updated_by": e.updated_by,
    }


class BookService:
    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._clock = clock

    # -- the address book ------------------------------------------------------------------------

    async def put_address(
        self, ctx: RequestContext, raw: Any, label: Any, note: Any = None
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        entry = AddressEntry(
            address(raw),
            _text(label, "label", MAX_LABEL, empty=False),
            _text(note, "note", MAX_NOTE, empty=True),
            self._clock(),
            ctx.caller.principal_id,
        )

        async def unit(writer: Writer) -> dict[str, Any]:
            await writer.books.put_address(entry)
            writer.append_audit(
                ctx.audit_event(
                    "books.address.put",
                    entry.updated_at,
                    resource=EventTarget("address", entry.address),
                    label=entry.label,
                )
            )
            return _address_view(entry)

        result: dict[str, Any] = await self._store.submit(unit)
        return result

    async def remove_address(self, ctx: RequestContext, raw: Any) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        key = address(raw)
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            if not await writer.books.remove_address(key):
                raise NotFound("no such address book entry", code="address_not_found")
            writer.append_audit(
                ctx.audit_event("books.address.remove", now, resource=EventTarget("address", key))
            )
            return {"address": key, "removed": True}

        result: dict[str, Any] = await self._store.submit(unit)
        return result

    async def list_addresses(self, ctx: RequestContext) -> list[dict[str, Any]]:
        require_role(ctx, *READERS)
        async with self._store.read() as reader:
            return [_address_view(e) for e in await reader.books.addresses()]

    # -- the token book --------------------------------------------------------------------------

    async def put_token(
        self, ctx: RequestContext, chain_id: Any, contract: Any, symbol: Any, decimals: Any
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        if type(chain_id) is not int or not 1 <= chain_id < 2**63:
            raise InvalidRequest("chain_id is a positive integer", code="invalid_chain_id", field="chain_id")
        if type(decimals) is not int or not 0 <= decimals <= 77:
            raise InvalidRequest("decimals is 0 to 77", code="invalid_decimals", field="decimals")
        if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
            raise InvalidRequest(
                "symbol is 1 to 20 letters, digits or . $ _ + -", code="invalid_symbol", field="symbol"
            )
        entry = TokenEntry(
            chain_id, address(contract, "contract"), symbol, decimals, self._clock(), ctx.caller.principal_id
        )

        async def unit(writer: Writer) -> dict[str, Any]:
            await writer.books.put_token(entry)
            writer.append_audit(
                ctx.audit_event(
                    "books.token.put",
                    entry.updated_at,
                    resource=EventTarget("token", f"{chain_id}:{entry.contract}"),
                    symbol=symbol,
                    decimals=decimals,
                )
            )
            return _token_view(entry)

        result: dict[str, Any] = await self._store.submit(unit)
        return result

    async def remove_token(self, ctx: RequestContext, chain_id: Any, contract: Any) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        if type(chain_id) is not int or not 1 <= chain_id < 2**63:
            raise InvalidRequest("chain_id is a positive integer", code="invalid_chain_id", field="chain_id")
        key = address(contract, "contract")
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            if not await writer.books.remove_token(chain_id, key):
                raise NotFound("no such token book entry", code="token_not_found")
            writer.append_audit(
                ctx.audit_event("books.token.remove", now, resource=EventTarget("token", f"{chain_id}:{key}"))
            )
            return {"chain_id": chain_id, "contract": key, "removed": True}

        result: dict[str, Any] = await self._store.submit(unit)
        return result

    async def list_tokens(self, ctx: RequestContext) -> list[dict[str, Any]]:
        require_role(ctx, *READERS)
        async with self._store.read() as reader:
            return [_token_view(e) for e in await reader.books.tokens()]

    # -- registered functions --------------------------------------------------------------------

    async def register(
        self, ctx: RequestContext, *, signature: Any = None, abi: Any = None, contract: Any = None
    ) -> list[dict[str, Any]]:
        """One signature, or every function of an ABI (for one contract, or every contract)."""
        require_role(ctx, Role.ADMIN)
        if (signature is None) == (abi is None):
            raise InvalidRequest(
                "give signature or abi, not both", code="invalid_function", field="signature"
            )
        if signature is not None:
            parse_signature(signature)
            signatures = [str(signature)]
        else:
            signatures = abi_functions(abi)
        scope = "" if contract is None else address(contract, "contract")
        now = self._clock()
        entries = [
            FunctionEntry(scope, selector_of(text), text, now, ctx.caller.principal_id) for text in signatures
        ]

        async def unit(writer: Writer) -> list[dict[str, Any]]:
            for entry in entries:
                await writer.books.put_function(entry)
            writer.append_audit(
                ctx.audit_event(
                    "books.function.put",
                    now,
                    resource=EventTarget("contract", scope or None),
                    functions=[f"{e.selector} {e.signature}" for e in entries[:50]],
                    count=len(entries),
                )
            )
            return [_function_view(e) for e in entries]

        result: list[dict[str, Any]] = await self._store.submit(unit)
        return result

    async def remove_function(
        self, ctx: RequestContext, selector: Any, contract: Any = None
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        key = _selector(selector)
        scope = "" if contract is None else address(contract, "contract")
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            if not await writer.books.remove_function(key, scope):
                raise NotFound("no such registered function", code="function_not_found")
            writer.append_audit(
                ctx.audit_event(
                    "books.function.remove",
                    now,
                    resource=EventTarget("contract", scope or None),
                    selector=key,
                )
            )
            return {"selector": key, "contract": scope or None, "removed": True}

        result: dict[str, Any] = await self._store.submit(unit)
        return result

    async def list_functions(self, ctx: RequestContext) -> list[dict[str, Any]]:
        require_role(ctx, *READERS)
        async with self._store.read() as reader:
            return [_function_view(e) for e in await reader.books.functions()]

    # -- what one request names ------------------------------------------------------------------

    async def notes_for(self, view: dict[str, Any]) -> dict[str, Any]:
        """The books' entries for the addresses, token contracts and function a request's ``view``
        names, in one read: ``addresses`` (lowercase address -> label, note), ``tokens`` (lowercase
        contract -> symbol, decimals, on the request's chain) and ``function`` (the registered
        signature for the called selector, the ``to`` contract's own first, and the arguments decoded
        when the calldata is exactly its canonical encoding, the addresses among them labelled too;
        None when nothing is registered)."""
        return (await self.notes_for_many([view]))[0]

    async def notes_for_many(self, views: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``notes_for`` of each view, in order, for a whole page of requests at once: one read of
        each book for every view together (and one more of the address book when decoded arguments
        name addresses the views did not), however many views there are."""
        wanted = [_Wanted.of(view) for view in views]
        addresses = set().union(*(w.addresses for w in wanted))
        tokens = set().union(*(w.tokens for w in wanted))
        selectors = set().union(*(w.selectors for w in wanted))
        async with self._store.read() as reader:
            found_addresses = await reader.books.addresses(addresses)
            found_tokens = await reader.books.tokens(tokens)
            found_functions = await reader.books.functions(selectors)
        functions = [_function(view, w, found_functions) for view, w in zip(views, wanted, strict=True)]
        # The addresses among decoded arguments get their labels too (a second, small read).
        more = {
            str(a["value"]).lower()
            for f in functions
            if f is not None
            for a in f["arguments"] or []
            if a["type"] == "address"
        } - addresses
        if more:
            async with self._store.read() as reader:
                found_addresses += await reader.books.addresses(more)
        labels = {e.address: {"label": e.label, "note": e.note} for e in found_addresses}
        units = {(e.chain_id, e.contract): {"symbol": e.symbol, "decimals": e.decimals} for e in found_tokens}
        out = []
        for w, function in zip(wanted, functions, strict=True):
            named = w.addresses | {
                str(a["value"]).lower()
                for a in (function or {}).get("arguments") or []
                if a["type"] == "address"
            }
            out.append(
                {
                    "addresses": {a: labels[a] for a in sorted(named) if a in labels},
                    "tokens": {
                        contract: units[(c, contract)]
                        for c, contract in sorted(w.tokens)
                        if (c, contract) in units
                    },
                    "function": function,
                }
            )
        return out


@dataclass(frozen=True, slots=True)
class _Wanted:
    """What one request's view names in the books: addresses, (chain, token contract) pairs, the
    called selector."""

    addresses: frozenset[str]
    tokens: frozenset[tuple[int, str]]
    selectors: frozenset[str]

    @staticmethod
    def of(view: dict[str, Any]) -> _Wanted:
        call = view.get("token_call") or {}
        domain = view.get("domain") or {}
        permits = view.get("permits") or []
        addresses = [view.get("to"), call.get("recipient"), call.get("owner")]
        addresses += [p.get("spender") for p in permits] + [p.get("token") for p in permits]
        addresses += list(view.get("delegates") or [])
        addresses += [view.get("delegate"), view.get("authority")]  # an EIP-7702 authorisation's
        chain = _int(view.get("chainId") if view.get("scheme") == "transaction" else domain.get("chainId"))
        contracts = ([view.get("to")] if call else []) + [p.get("token") for p in permits]
        selector = view.get("selector") if view.get("scheme") == "transaction" and not call else None
        return _Wanted(
            frozenset(a.lower() for a in addresses if isinstance(a, str) and _ADDRESS.fullmatch(a)),
            frozenset(
                (chain, a.lower())
                for a in contracts
                if chain and isinstance(a, str) and _ADDRESS.fullmatch(a)
            ),
            frozenset({selector.lower()})
            if isinstance(selector, str) and _SELECTOR.fullmatch(selector)
            else frozenset(),
        )


def _function(view: dict[str, Any], wanted: _Wanted, found: list[FunctionEntry]) -> dict[str, Any] | None:
    """The registered function a view calls (the ``to`` contract's own first, then one registered for
    every contract), with its arguments decoded; None when nothing is registered."""
    mine = [f for f in found if f.selector in wanted.selectors]
    if not mine:
        return None
    to = str(view.get("to") or "").lower()
    chosen = next((f for f in mine if f.contract == to), None) or next(
        (f for f in mine if f.contract == ""), None
    )
    if chosen is None:
        return None
    data = str(view.get("data") or "")
    try:
        calldata = bytes.fromhex(data[2:])
    except ValueError:
        calldata = b""
    return {
        "signature": chosen.signature,
        "arguments": decode_call(chosen.signature, calldata),
        "contract_specific": bool(chosen.contract),
    }


def _int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return number if 0 < number < 2**63 else 0
