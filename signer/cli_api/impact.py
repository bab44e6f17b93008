"""Impact review, usage and checklist commands: ``impact ACTION ID``, ``checklist``, ``usage report``,
``usage secret ID``, ``usage grant ID``.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from typing import Any

import click

from signer.cli_api.common import api_call
from signer.client import SignerClient

ACTIONS = (
    "revoke_grant",
    "disable_principal",
    "delete_secret",
    "rotate_secret",
    "disable_secret",
    "enable_secret",
)


@click.command("impact")
@click.argument("action", type=click.Choice(ACTIONS))
@click.argument("target_id")
@click.option("--days", type=click.IntRange(0, 3660), default=30, show_default=True, help="usage window")
@api_call()
def impact(client: SignerClient, action: str, target_id: str, days: int) -> Any:
    """Before acting: who loses or keeps access (through which grants), which workloads fetched it,
    which references and consumers fail, what becomes unused (admin, auditor). Changes nothing."""
    return client.impact(action, target_id, days)


@click.command("checklist")
@click.option("--days", type=click.IntRange(0, 3660), default=None, help="leave younger things alone")
@click.option("--limit", type=click.IntRange(1, 1000), default=None, help="entries shown per item")
@click.option("--rotated-days", type=click.IntRange(0, 3660), default=None, help="never rotated after (90)")
@api_call()
def checklist(client: SignerClient, days: int | None, limit: int | None, rotated_days: int | None) -> Any:
    """The operator checklist: each item says what is wrong, why it matters and what to do."""
    return client.checklist(days, limit, rotated_days)


@click.group()
def usage() -> None:
    """Who fetched which secret, when and how often; grants never used (admin, auditor)."""


@usage.command("report")
@click.option("--days", type=click.IntRange(0, 3660), default=None, help="not fetched in this many days")
@click.option("--limit", type=click.IntRange(1, 1000), default=None, help="entries shown per list")
@api_call()
def usage_report(client: SignerClient, days: int | None, limit: int | None) -> Any:
    """Secrets never fetched, not fetched in N days, and grants never used."""
    return client.usage_report(days, limit)


@usage.command("secret")
@click.argument("secret_id")
@click.option("--days", type=click.IntRange(0, 3660), default=None, help="the window")
@api_call()
def usage_secret(client: SignerClient, secret_id: str, days: int | None) -> Any:
    """One secret: last fetched, fetches per principal and workload, per day, and the grants used."""
    return client.secret_usage(secret_id, days)


@usage.command("grant")
@click.argument("grant_id")
@api_call()
def usage_grant(client: SignerClient, grant_id: str) -> Any:
    """When a grant was last used, by whom, on what."""
    return client.grant_usage(grant_id)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (impact, checklist, usage)
