"""Group commands: ``groups list|show|add-member|remove-member`` (webhooks add theirs in ``webhooks``).

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from typing import Any

import click

from signer.cli_api.common import api_call
from signer.client import SignerClient


@click.group()
def groups() -> None:
    """Principal groups: grants to a group reach every member (admin; list and show: auditor too)."""


@groups.command("list")
@api_call(columns=("group", "members"))
def groups_list(client: SignerClient) -> Any:
    """List groups and their members."""
    return client.list_groups()


@groups.command("show")
@click.argument("group")
@api_call()
def groups_show(client: SignerClient, group: str) -> Any:
    """Show one group."""
    return client.get_group(group)


@groups.command("add-member")
@click.argument("group")
@click.argument("principal_id")
@api_call()
def groups_add_member(client: SignerClient, group: str, principal_id: str) -> Any:
    """Add a principal to a group (the group exists while it has members)."""
    return client.add_group_member(group, principal_id)


@groups.command("remove-member")
@click.argument("group")
@click.argument("principal_id")
@api_call()
def groups_remove_member(client: SignerClient, group: str, principal_id: str) -> Any:
    """Remove a principal from a group."""
    return client.remove_group_member(group, principal_id)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (groups,)
