"""Webhook commands, under ``groups``: ``set-webhook``, ``rotate-webhook-secret``, ``delete-webhook``; and
``alerts``, the unusual-access alerts the alerts webhook has not taken. The HMAC key is printed only by
the commands that exist to hand it out.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from typing import Any

import click

from signer.cli_api.common import api_call
from signer.cli_api.groups import groups
from signer.client import SignerClient


@groups.command("set-webhook")
@click.argument("group")
@click.argument("url")
@api_call()
def groups_set_webhook(client: SignerClient, group: str, url: str) -> Any:
    """Call URL on the group's new pending requests and outcomes (prints the HMAC key once)."""
    return client.set_group_webhook(group, url)


@groups.command("rotate-webhook-secret")
@click.argument("group")
@click.option(
    "--overlap",
    "overlap_seconds",
    type=click.IntRange(0, 30 * 24 * 3600),
    default=None,
    help="Seconds the previous secret's signature is still sent [default: the server's setting].",
)
@api_call()
def groups_rotate_webhook_secret(client: SignerClient, group: str, overlap_seconds: int | None) -> Any:
    """New HMAC key for the group's webhook (printed once); both signatures are sent during the overlap."""
    return client.rotate_group_webhook_secret(group, overlap_seconds)


@groups.command("delete-webhook")
@click.argument("group")
@api_call()
def groups_delete_webhook(client: SignerClient, group: str) -> Any:
    """Stop calling the group's webhook."""
    return client.delete_group_webhook(group)


@click.command("alerts")
@click.option("--limit", type=click.IntRange(1, 1000), default=None, help="alerts shown (100)")
@api_call()
def alerts(client: SignerClient, limit: int | None) -> Any:
    """Unusual-access alerts not delivered to the alerts webhook: still retried, or given up (admin,
    auditor)."""
    return client.undelivered_alerts(limit)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (alerts,)
