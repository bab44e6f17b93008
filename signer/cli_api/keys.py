"""Key commands: ``keys create|list|show|disable|enable``.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from typing import Any

import click

from signer.cli_api.common import api_call
from signer.client import SignerClient

KEY_COLUMNS = ("id", "label", "curve", "state", "address", "scope", "created_at")


@click.group()
def keys() -> None:
    """Keys held in the token."""


@keys.command("create")
@click.option("--curve", type=click.Choice(["secp256k1", "ed25519", "p256"]), required=True, help="Curve.")
@click.option("--label", required=True, help="Human label (letters, digits, spaces, '.', '_', '-').")
@click.option("--scope", default=None, help="Scope such as 'acme/payments/prod' [server default: default].")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@api_call()
def keys_create(
    client: SignerClient, curve: str, label: str, scope: str | None, tags: tuple[str, ...]
) -> Any:
    """Generate a key inside the token (admin)."""
    return client.create_key(curve, label, scope, list(tags))


@keys.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Page size.")
@click.option("--after", default=None, help="Continue after this key id.")
@api_call(columns=KEY_COLUMNS)
def keys_list(client: SignerClient, limit: int, after: str | None) -> Any:
    """List keys (services see only keys granted to them)."""
    return client.list_keys(limit=limit, after=after)


@keys.command("show")
@click.argument("key_id")
@api_call()
def keys_show(client: SignerClient, key_id: str) -> Any:
    """Show a key: public key, address, state and the token's attributes."""
    return client.get_key(key_id)


@keys.command("disable")
@click.argument("key_id")
@api_call()
def keys_disable(client: SignerClient, key_id: str) -> Any:
    """Disable a key: it signs nothing until enabled (admin)."""
    return client.disable_key(key_id)


@keys.command("enable")
@click.argument("key_id")
@api_call()
def keys_enable(client: SignerClient, key_id: str) -> Any:
    """Enable a disabled key (admin)."""
    return client.enable_key(key_id)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (keys,)
