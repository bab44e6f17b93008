"""Key commands: ``keys create|list|show``, the lifecycle
``keys activate|suspend|deactivate|compromise|destroy``, and the old ``keys disable|enable``.

A transition that policy sends to approvers prints the pending request and exits 10 (nothing changed);
the same command with ``--approval ID`` completes it once approved (``--wait N`` first waits up to N
seconds for the approvers).

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from signer.cli_api.common import api_call, pending_or_done
from signer.client import ApiError, SignerClient

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


def _approval(command: Any) -> Any:
    command = click.option(
        "--wait",
        type=click.IntRange(min=0, max=60),
        default=0,
        help="With --approval: first wait up to this many seconds for the approvers [0].",
    )(command)
    return click.option(
        "--approval",
        "approval_id",
        default=None,
        help="Complete this approved request for the same transition (once; the reason it approved).",
    )(command)


def _transition(
    client: SignerClient, key_id: str, action: str, approval_id: str | None, wait: int, **fields: Any
) -> Any:
    if approval_id is not None and wait:
        # A failed wait is not an error here: the transition itself says why it cannot run
        # (rejected, expired, not yours...).
        with contextlib.suppress(ApiError):
            client.approval_result(approval_id, wait=wait)
    answer = client.key_transition(key_id, action, approval_id=approval_id, **fields)
    confirm = f" --confirm {fields['confirm']!r}" if fields.get("confirm") else ""
    again = f"signer keys {action} {key_id}{confirm} --approval {{id}} --wait 60"
    return pending_or_done(answer, f"nothing changed; once approved, run `{again}`")


_CONFIRM = click.option(
    "--confirm", required=True, help="The key's label, exactly: this transition is irreversible."
)


@keys.command("activate")
@click.argument("key_id")
@_REASON
@_approval
@api_call()
def keys_activate(
    client: SignerClient, key_id: str, reason: str | None, approval_id: str | None, wait: int
) -> Any:
    """Activate a suspended (or not yet active) key: it signs again (admin)."""
    return _transition(client, key_id, "activate", approval_id, wait, reason=reason)


@keys.command("suspend")
@click.argument("key_id")
@_REASON
@_approval
@api_call()
def keys_suspend(
    client: SignerClient, key_id: str, reason: str | None, approval_id: str | None, wait: int
) -> Any:
    """Suspend an active key: it signs nothing until activated (admin)."""
    return _transition(client, key_id, "suspend", approval_id, wait, reason=reason)


@keys.command("deactivate")
@click.argument("key_id")
@_REASON
@_approval
@api_call()
def keys_deactivate(
    client: SignerClient, key_id: str, reason: str | None, approval_id: str | None, wait: int
) -> Any:
    """Deactivate a key for good: it never signs again; its public key stays (admin)."""
    return _transition(client, key_id, "deactivate", approval_id, wait, reason=reason)


@keys.command("compromise")
@click.argument("key_id")
@_REASON
@_CONFIRM
@click.option(
    "--compromised-at",
    default=None,
    help="When it is believed compromised (RFC 3339, e.g. 2026-12-01T00:00:00Z).",
)
@_approval
@api_call()
def keys_compromise(
    client: SignerClient,
    key_id: str,
    reason: str | None,
    confirm: str,
    compromised_at: str | None,
    approval_id: str | None,
    wait: int,
) -> Any:
    """Declare a key compromised: irreversible, it never signs again (admin)."""
    return _transition(
        client,
        key_id,
        "compromise",
        approval_id,
        wait,
        reason=reason,
        confirm=confirm,
        compromised_at=compromised_at,
    )


@keys.command("destroy")
@click.argument("key_id")
@_REASON
@_CONFIRM
@_approval
@api_call()
def keys_destroy(
    client: SignerClient, key_id: str, reason: str | None, confirm: str, approval_id: str | None, wait: int
) -> Any:
    """Destroy a deactivated or compromised key's private key in the token: irreversible (admin)."""
    return _transition(client, key_id, "destroy", approval_id, wait, reason=reason, confirm=confirm)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (keys,)
