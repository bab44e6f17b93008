"""Ethereum JSON-RPC parameters as clients send them, turned into what the signer's parsers take.

Clients (web3.py, ethers, viem, Foundry) write the same transaction differently: quantities in hex or
decimal, calldata as ``input`` or ``data``, ``gasLimit`` for ``gas``, no ``type`` (inferred from the
fee and list fields), access lists as objects or ``[address, [keys]]`` pairs, EIP-7702 authorisations
with ``v`` instead of ``yParity``. ``rpc_transaction`` accepts those spellings and returns the sender and
the one JSON shape ``transactions.parse_transaction`` validates strictly; the other helpers read
``eth_sign`` / ``personal_sign`` data and ``eth_signTypedData`` documents. Pure: no key, no network, and
every refusal is an ``InvalidRequest`` naming the field, never repeating the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from signer.eth.primitives import invalid, parse_address, parse_hex_bytes, parse_quantity
from signer.eth.transactions import TX_ACCESS_LIST, TX_DYNAMIC_FEE, TX_LEGACY, TX_SET_CODE

# Fields a client may send that carry no meaning for an unsigned transaction request.
_IGNORED_WHEN_NULL = ("to", "accessList", "authorizationList", "gasPrice", "maxFeePerGas",
                      "maxPriorityFeePerGas", "value", "data", "input", "type", "chainId")  # fmt: skip


_MAX_BRACKETS = 512


def infer_type(tx: Mapping[str, Any]) -> int:
    """The transaction type its fields imply: 4 with an authorisation list, 2 with EIP-1559 fees, 1 with
    an access list, else 0."""
    if tx.get("authorizationList") is not None:
        return TX_SET_CODE
    if tx.get("maxFeePerGas") is not None or tx.get("maxPriorityFeePerGas") is not None:
        return TX_DYNAMIC_FEE
    if tx.get("accessList") is not None and tx.get("gasPrice") is not None:
        return TX_ACCESS_LIST
    return TX_LEGACY


def rpc_transaction(value: Any, *, default_type: int | None = None) -> tuple[str, dict[str, Any]]:
    """``(sender, transaction)`` from an ``eth_signTransaction`` / ``eth_sendTransaction`` object. With
    ``default_type`` (a send, whose fees the node fills), a transaction naming no fee field gets that
    type instead of legacy."""
    if not isinstance(value, Mapping):
        raise invalid("invalid_field", "transaction", "the transaction must be an object")
    tx = {k: v for k, v in value.items() if not (v is None and k in _IGNORED_WHEN_NULL)}
    if "from" not in tx:
        raise invalid("missing_field", "from", "from is required: it names the key that signs")
    sender = parse_address(tx.pop("from"), "from")
    if "input" in tx:
        data = tx.pop("input")
        if "data" in tx and parse_hex_bytes(tx["data"], "data") != parse_hex_bytes(data, "input"):
            raise invalid("invalid_field", "input", "input and data differ")
        tx["data"] = data
    if "gasLimit" in tx:
        if "gas" in tx and parse_quantity(tx["gas"], "gas") != parse_quantity(tx["gasLimit"], "gasLimit"):
            raise invalid("invalid_field", "gasLimit", "gas and gasLimit differ")
        tx["gas"] = tx.pop("gasLimit")
    if "type" not in tx:
        fees = ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas")
        no_fees = default_type is not None and not any(name in tx for name in fees)
        tx["type"] = default_type if no_fees else infer_type(tx)
    else:
        tx["type"] = parse_quantity(tx["type"], "type")
    if "accessList" in tx:
        tx["accessList"] = _access_list(tx["accessList"])
    if "authorizationList" in tx:
        tx["authorizationList"] = _authorizations(tx["authorizationList"])
    return sender, tx


def wants_fees(tx: Mapping[str, Any]) -> list[str]:
    """The fee fields a transaction of its type lacks (for a node to fill in)."""
    names = ("gasPrice",) if tx.get("type") in (0, 1) else ("maxPriorityFeePerGas", "maxFeePerGas")
    return [name for name in names if name not in tx]


def _access_list(value: Any) -> Any:
    if not isinstance(value, list):
        return value  # parse_transaction names the field
    entries: list[Any] = []
    for entry in value:
        if isinstance(entry, list | tuple) and len(entry) == 2:
            entries.append({"address": entry[0], "storageKeys": list(entry[1] or [])})
        else:
            entries.append(entry)
    return entries


def _authorizations(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    entries: list[Any] = []
    for index, entry in enumerate(value):
        if isinstance(entry, Mapping) and "v" in entry and "yParity" not in entry:
            v = parse_quantity(entry["v"], f"authorizationList[{index}].v")
            if v not in (0, 1, 27, 28):
                raise invalid("invalid_field", f"authorizationList[{index}].v", "v must be 0, 1, 27 or 28")
            entry = {**{k: x for k, x in entry.items() if k != "v"}, "yParity": v % 27 if v >= 27 else v}
        entries.append(entry)
    return entries


def sign_data(value: Any, field: str, *, text_allowed: bool) -> bytes:
    """``eth_sign`` data (0x hex) or ``personal_sign`` data (0x hex, or text, which some clients send)."""
    if isinstance(value, str) and value.startswith("0x"):
        return parse_hex_bytes(value, field)
    if text_allowed and isinstance(value, str):
        return value.encode("utf-8")
    raise invalid("invalid_field", field, f"{field} must be 0x hex data")


def typed_data_document(value: Any) -> Mapping[str, Any]:
    """``eth_signTypedData_v4``'s document: an object, or the JSON text of one (MetaMask's spelling)."""
    if isinstance(value, str):
        # Nested deeper than any real document: refused before the parser recurses into it.
        if value.count("{") + value.count("[") > _MAX_BRACKETS:
            raise invalid("invalid_field", "typed_data", "typed data is nested too deeply")
        try:
            value = json.loads(value)
        except ValueError:
            raise invalid("invalid_field", "typed_data", "typed data is not valid JSON") from None
    if not isinstance(value, Mapping):
        raise invalid("invalid_field", "typed_data", "typed data must be an object")
    return value
