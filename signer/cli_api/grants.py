"""Grant commands: ``grants create|list|revoke``; times and value budgets are checked before the request.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from signer.cli_api.common import api_call, pending_or_done
from signer.client import SignerClient

GRANT_COLUMNS = (
    "id",
    "principal_id",
    "group",
    "resource_type",
    "resource_id",
    "operations",
    "no_access",
    "expires_at",
    "revoked",
)


@click.group()
def grants() -> None:
    """Grants: which principal may do which operations on which resource (admin)."""


def _aware_time(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Catch a time without an offset here, before a round trip (the server refuses it too)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter("not an RFC 3339 time, e.g. 2030-01-01T00:00:00Z") from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise click.BadParameter("give a date, a time and an offset, e.g. 2030-01-01T00:00:00Z")
    return value


def _budgets(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    budgets = {}
    for value in values:
        asset, sep, amount = value.partition("=")
        if not sep or not asset or not amount:
            raise click.BadParameter(f"{value!r} is not ASSET=AMOUNT (e.g. native=1000000000000000000)")
        budgets[asset] = amount
    return budgets


def _reference(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    kind, sep, resource_id = value.partition(":")
    if not sep or not kind or not resource_id:
        raise click.BadParameter(f"{value!r} is not TYPE:ID (e.g. key:key_0123456789abcdef)")
    return kind, resource_id


@grants.command("create")
@click.option("--principal", "principal_id", default=None, help="To this principal (or --group).")
@click.option("--group", default=None, help="To every member of this group (or --principal).")
@click.option(
    "--resource",
    default=None,
    callback=_reference,
    help="On this resource, as TYPE:ID (key:key_..., secret:sec_..., or any other kind of resource).",
)
@click.option("--key", "key_id", default=None, help="On this key (as --resource key:ID).")
@click.option("--secret", "secret_id", default=None, help="On this secret (as --resource secret:ID).")
@click.option("--scope", default=None, help="On every resource under this scope (or --resource).")
@click.option(
    "--operation",
    "operations",
    multiple=True,
    help="An operation of the resource's kind to allow, e.g. sign_transaction on a key, read_value on a "
    "secret (repeatable; or --no-access). The server refuses others, naming the ones it allows.",
)
@click.option(
    "--no-access",
    is_flag=True,
    default=False,
    help="Say no access here instead: overrides what the principal or group inherits from a broader scope.",
)
@click.option(
    "--expires-at",
    default=None,
    callback=_aware_time,
    help="RFC 3339 time with an offset (e.g. 2030-01-01T00:00:00Z) after which the grant stops.",
)
@click.option("--max-uses", type=click.IntRange(min=0), default=None, help="Stop after this many signatures.")
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    callback=_budgets,
    help="ASSET=AMOUNT value budget ('native' or a token address; amount in base units), repeatable.",
)
@click.option(
    "--approval",
    "approval_id",
    default=None,
    help="Make this approved grant on a key (once; give the same options as when it was asked for).",
)
@api_call()
def grants_create(
    client: SignerClient,
    principal_id: str | None,
    group: str | None,
    resource: tuple[str, str] | None,
    key_id: str | None,
    secret_id: str | None,
    scope: str | None,
    operations: tuple[str, ...],
    expires_at: str | None,
    max_uses: int | None,
    budgets: dict[str, str],
    no_access: bool,
    approval_id: str | None,
) -> Any:
    """Allow a principal or a group operations on one resource or on every resource under a scope, or
    (--no-access) take away there what it would inherit from a broader scope."""
    if no_access == bool(operations):
        raise click.UsageError("give --operation (one or more) or --no-access, not both")
    answer = client.create_grant(
        list(operations) if operations else None,
        principal_id=principal_id,
        group=group,
        resource=resource,
        key_id=key_id,
        secret_id=secret_id,
        scope=scope,
        expires_at=expires_at,
        max_uses=max_uses,
        value_budgets=budgets,
        no_access=no_access,
        approval_id=approval_id,
    )
    return pending_or_done(
        answer, "nothing granted; once approved, run the same command with --approval {id}"
    )


@grants.command("list")
@click.option("--principal", "principal_id", default=None, help="Only this principal's grants.")
@api_call(columns=GRANT_COLUMNS)
def grants_list(client: SignerClient, principal_id: str | None) -> Any:
    """List grants."""
    return client.list_grants(principal_id)


@grants.command("revoke")
@click.argument("grant_id")
@click.option("--approval", "approval_id", default=None, help="Complete this approved revocation (once).")
@api_call()
def grants_revoke(client: SignerClient, grant_id: str, approval_id: str | None) -> Any:
    """Revoke a grant (one on a key may need approvers: see `keys` and the key_lifecycle rule)."""
    answer = client.revoke_grant(grant_id, approval_id)
    return pending_or_done(
        answer, f"nothing revoked; once approved, run `signer grants revoke {grant_id} --approval {{id}}`"
    )


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (grants,)
