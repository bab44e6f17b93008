"""The console's books: ``books address add|list|remove``, ``books token add|list|remove``,
``books abi add|list|remove`` (a signature, or a contract ABI JSON file).

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

import json
from typing import Any

import click

from signer.cli_api.common import api_call
from signer.client import SignerClient


@click.group()
def books() -> None:
    """Names the console shows beside a request: addresses, tokens, functions (admins write)."""


@books.group("address")
def address() -> None:
    """The address book: an address's label and note."""


@address.command("add")
@click.argument("addr")
@click.argument("label")
@click.option("--note", default=None, help="a note shown with the label")
@api_call()
def address_add(client: SignerClient, addr: str, label: str, note: str | None) -> Any:
    """Name ADDR (replacing any entry)."""
    return client.put_address(addr, label, note)


@address.command("list")
@api_call(("address", "label", "note", "updated_at"))
def address_list(client: SignerClient) -> Any:
    """Every address book entry."""
    return client.list_addresses()["items"]


@address.command("remove")
@click.argument("addr")
@api_call()
def address_remove(client: SignerClient, addr: str) -> Any:
    """Remove ADDR's entry."""
    return client.remove_address(addr)


@books.group("token")
def token() -> None:
    """The token book: a token contract's symbol and decimals per chain."""


@token.command("add")
@click.argument("chain_id", type=click.IntRange(1))
@click.argument("contract")
@click.argument("symbol")
@click.argument("decimals", type=click.IntRange(0, 77))
@api_call()
def token_add(client: SignerClient, chain_id: int, contract: str, symbol: str, decimals: int) -> Any:
    """Name CONTRACT on CHAIN_ID as SYMBOL with DECIMALS (replacing any entry)."""
    return client.put_token(chain_id, contract, symbol, decimals)


@token.command("list")
@api_call(("chain_id", "contract", "symbol", "decimals"))
def token_list(client: SignerClient) -> Any:
    """Every token book entry."""
    return client.list_tokens()["items"]


@token.command("remove")
@click.argument("chain_id", type=click.IntRange(1))
@click.argument("contract")
@api_call()
def token_remove(client: SignerClient, chain_id: int, contract: str) -> Any:
    """Remove CONTRACT's entry on CHAIN_ID."""
    return client.remove_token(chain_id, contract)


@books.group("abi")
def abi() -> None:
    """Registered functions: decoded on the approver's page when a request calls them."""


@abi.command("add")
@click.option("--signature", default=None, help="one canonical signature, e.g. payout(address,uint256)")
@click.option("--abi-file", type=click.File("r"), default=None, help="a contract ABI JSON file")
@click.option("--contract", default=None, help="for this contract only (default: every contract)")
@api_call(("selector", "signature", "contract"))
def abi_add(client: SignerClient, signature: str | None, abi_file: Any, contract: str | None) -> Any:
    """Register a function signature, or every function of a contract ABI."""
    if (signature is None) == (abi_file is None):
        raise click.UsageError("give --signature or --abi-file")
    try:
        document = json.load(abi_file) if abi_file is not None else None
    except json.JSONDecodeError:
        raise click.UsageError("the ABI file is not JSON") from None
    return client.register_functions(signature=signature, abi=document, contract=contract)["items"]


@abi.command("list")
@api_call(("selector", "signature", "contract"))
def abi_list(client: SignerClient) -> Any:
    """Every registered function."""
    return client.list_functions()["items"]


@abi.command("remove")
@click.argument("selector")
@click.option("--contract", default=None, help="the contract it was registered for")
@api_call()
def abi_remove(client: SignerClient, selector: str, contract: str | None) -> Any:
    """Remove a registered function."""
    return client.remove_function(selector, contract)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (books,)
