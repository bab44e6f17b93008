"""Signing commands: ``sign transaction|message|typed-data|authorization|digest``, with ``--idempotency-key``.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from signer.cli_api.common import (
    EXIT_DENIED,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_PENDING,
    EXIT_RATE_LIMITED,
    EXIT_UNAVAILABLE,
    Outcome,
    api_call,
    pending_or_done,
    read_input,
    read_json_object,
)
from signer.client import SignerClient


@click.group()
def sign() -> None:
    """Sign with a key you hold a grant on (services)."""


_idempotency_option = click.option(
    "--idempotency-key",
    default=None,
    help="Sent as Idempotency-Key: a retry with the same key and request is executed at most once.",
)


@sign.command("transaction")
@click.argument("key_id")
@click.argument("source", default="-", metavar="[FILE]")
@click.option("--raw", is_flag=True, help="FILE holds an unsigned serialised transaction (0x hex), not JSON.")
@_idempotency_option
@api_call()
def sign_transaction(
    client: SignerClient, key_id: str, source: str, raw: bool, idempotency_key: str | None
) -> Any:
    """Sign a transaction given as JSON (JSON-RPC field names) in FILE or on stdin."""
    if raw:
        return pending_or_done(
            client.sign_transaction(key_id, raw=read_input(source).strip(), idempotency_key=idempotency_key)
        )
    return pending_or_done(
        client.sign_transaction(key_id, read_json_object(source), idempotency_key=idempotency_key)
    )


@sign.command("message")
@click.argument("key_id")
@click.argument("message", required=False)
@click.option(
    "--encoding",
    type=click.Choice(["utf8", "hex", "base64"]),
    default="utf8",
    show_default=True,
    help="How MESSAGE is written.",
)
@click.option("--file", "message_file", type=click.File("rb"), default=None, help="Sign this file's bytes.")
@_idempotency_option
@api_call()
def sign_message(
    client: SignerClient,
    key_id: str,
    message: str | None,
    encoding: str,
    message_file: Any,
    idempotency_key: str | None,
) -> Any:
    """Sign MESSAGE (EIP-191 personal_sign for secp256k1); without MESSAGE or --file, read stdin as text."""
    import base64

    if message_file is not None:
        if message is not None:
            raise click.UsageError("give MESSAGE or --file, not both")
        encoded = base64.b64encode(message_file.read()).decode("ascii")
        return pending_or_done(
            client.sign_message(key_id, encoded, "base64", idempotency_key=idempotency_key)
        )
    if message is None:
        message = sys.stdin.read()
    return pending_or_done(client.sign_message(key_id, message, encoding, idempotency_key=idempotency_key))


@sign.command("typed-data")
@click.argument("key_id")
@click.argument("source", default="-", metavar="[FILE]")
@_idempotency_option
@api_call()
def sign_typed_data(client: SignerClient, key_id: str, source: str, idempotency_key: str | None) -> Any:
    """Sign EIP-712 typed data (types, primaryType, domain, message) from FILE or stdin."""
    return pending_or_done(
        client.sign_typed_data(key_id, read_json_object(source), idempotency_key=idempotency_key)
    )


@sign.command("digest")
@click.argument("key_id")
@click.argument("digest")
@_idempotency_option
@api_call()
def sign_digest(client: SignerClient, key_id: str, digest: str, idempotency_key: str | None) -> Any:
    """Blind-sign a 32-byte digest (0x hex); needs the sign_raw grant and a policy allowing raw digests."""
    return pending_or_done(client.sign_digest(key_id, digest, idempotency_key=idempotency_key))


@sign.command("authorization")
@click.argument("key_id")
@click.option("--chain-id", required=True, help="The chain the authorisation is valid on (0: any chain).")
@click.option("--delegate", required=True, help="The contract whose code the key's account will run.")
@click.option("--nonce", required=True, help="The key's account nonce when the authorisation is used.")
@_idempotency_option
@api_call()
def sign_authorization(
    client: SignerClient, key_id: str, chain_id: str, delegate: str, nonce: str, idempotency_key: str | None
) -> Any:
    """Sign an EIP-7702 authorisation; needs the sign_authorization grant and the delegate on a
    delegate_allowlist rule. Numbers are decimal or 0x hex."""
    return pending_or_done(
        client.sign_authorization(key_id, chain_id, delegate, nonce, idempotency_key=idempotency_key)
    )


# JSON-RPC error codes (signer.services.jsonrpc) and the exit codes a script sees for them.
_RPC_EXIT = {
    -32010: EXIT_PENDING,
    -32003: EXIT_DENIED,
    -32000: EXIT_NOT_FOUND,
    -32600: EXIT_INVALID,
    -32601: EXIT_INVALID,
    -32602: EXIT_INVALID,
    -32005: EXIT_RATE_LIMITED,
    -32002: EXIT_UNAVAILABLE,
}


@sign.command("rpc")
@click.argument("method")
@click.argument("params", default="[]", metavar="[PARAMS|-]")
@api_call()
def sign_rpc(client: SignerClient, method: str, params: str) -> Any:
    """One Ethereum JSON-RPC call on /v1/rpc (e.g. eth_accounts, eth_signTransaction '[{...}]'); PARAMS is
    a JSON array (or object), or - for stdin. An error answer exits like the REST refusal it stands for."""
    text = sys.stdin.read() if params == "-" else params
    try:
        parsed = json.loads(text)
    except ValueError:
        raise click.BadParameter("PARAMS must be JSON (an array or an object)") from None
    if not isinstance(parsed, list | dict):
        raise click.BadParameter("PARAMS must be a JSON array or object")
    answer = client.json_rpc(method, parsed)
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        click.echo(f"signer: JSON-RPC error {error.get('code')}: {error.get('message')}", err=True)
        code = error.get("code")
        return Outcome(answer, _RPC_EXIT.get(code, EXIT_FAILED) if isinstance(code, int) else EXIT_FAILED)
    return answer


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (sign,)
