"""Key commands: ``keys create|list|show``, the lifecycle
``keys activate|suspend|deactivate|compromise|destroy``, and the old ``keys disable|enable``.

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
@click.option(
    "--inactive", is_flag=True, help="Create it in state pre_activation (signs nothing until activated)."
)
@api_call()
def keys_create(
    client: SignerClient, curve: str, label: str, scope: str | None, tags: tuple[str, ...], inactive: bool
) -> Any:
    """Generate a key inside the token (admin)."""
    return client.create_key(curve, label, scope, list(tags), inactive=inactive)


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
    """Disable a key: the same as suspend (admin)."""
    return client.disable_key(key_id)


@keys.command("enable")
@click.argument("key_id")
@api_call()
def keys_enable(client: SignerClient, key_id: str) -> Any:
    """Enable a disabled key: the same as activate (admin)."""
    return client.enable_key(key_id)


_REASON = click.option("--reason", default=None, help="Why (kept in the audit log).")
_CONFIRM = click.option(
    "--confirm", required=True, help="The key's label, exactly: this transition is irreversible."
)


@keys.command("activate")
@click.argument("key_id")
@_REASON
@api_call()
def keys_activate(client: SignerClient, key_id: str, reason: str | None) -> Any:
    """Activate a suspended (or not yet active) key: it signs again (admin)."""
    return client.key_transition(key_id, "activate", reason=reason)


@keys.command("suspend")
@click.argument("key_id")
@_REASON
@api_call()
def keys_suspend(client: SignerClient, key_id: str, reason: str | None) -> Any:
    """Suspend an active key: it signs nothing until activated (admin)."""
    return client.key_transition(key_id, "suspend", reason=reason)


@keys.command("deactivate")
@click.argument("key_id")
@_REASON
@api_call()
def keys_deactivate(client: SignerClient, key_id: str, reason: str | None) -> Any:
    """Deactivate a key for good: it never signs again; its public key stays (admin)."""
    return client.key_transition(key_id, "deactivate", reason=reason)


@keys.command("compromise")
@click.argument("key_id")
@_REASON
@_CONFIRM
@click.option(
    "--compromised-at",
    default=None,
    help="When it is believed compromised (RFC 3339, e.g. 2026-12-01T00:00:00Z).",
)
@api_call()
def keys_compromise(
    client: SignerClient, key_id: str, reason: str | None, confirm: str, compromised_at: str | None
) -> Any:
    """Declare a key compromised: irreversible, it never signs again (admin)."""
    return client.key_transition(
        key_id, "compromise", reason=reason, confirm=confirm, compromised_at=compromised_at
    )


@keys.command("destroy")
@click.argument("key_id")
@_REASON
@_CONFIRM
@api_call()
def keys_destroy(client: SignerClient, key_id: str, reason: str | None, confirm: str) -> Any:
    """Destroy a deactivated or compromised key's private key in the token: irreversible (admin)."""
    return client.key_transition(key_id, "destroy", reason=reason, confirm=confirm)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (keys,)
