"""Secret version commands: ``secrets versions|rotate|promote|disable-version|enable-version|
destroy-version`` (``--if-match`` for check-and-set on every write).

Thin, like ``secrets``: parse options, call one ``SignerClient`` method, return the answer. A new value
never comes from argv: ``--value-from NAME=PATH`` (a file, or ``-`` for stdin), ``--generate`` with a
rule, or neither for a generated secret (a new value from its own rule). Nothing here prints a value.
"""

from __future__ import annotations

from typing import Any

import click

from signer.cli_api.common import api_call
from signer.cli_api.secrets import _read_values, _rule, _value_options, secrets
from signer.client import SignerClient

VERSION_COLUMNS = ("version", "state", "created_at", "created_by", "reason", "readable_until")
IF_MATCH = click.option(
    "--if-match",
    "if_match",
    default=None,
    help='Write only if unchanged: the ETag ("r<revision>", shown as revision) or the current version.',
)


@secrets.command("versions")
@click.argument("secret_id")
@api_call(columns=VERSION_COLUMNS)
def secrets_versions(client: SignerClient, secret_id: str) -> Any:
    """List a secret's versions: who made each, when, its state and why (never a value)."""
    return client.list_secret_versions(secret_id)["items"]


@secrets.command("rotate")
@click.argument("secret_id")
@_value_options
@click.option("--stage", is_flag=True, help="Stage it: read by number only until promoted.")
@IF_MATCH
@api_call()
def secrets_rotate(
    client: SignerClient,
    secret_id: str,
    value_from: tuple[str, ...],
    generate: str | None,
    length: int | None,
    size: int | None,
    classes: tuple[str, ...],
    generate_field: str | None,
    stage: bool,
    if_match: str | None,
) -> Any:
    """Rotate: a new version from --value-from, from --generate, or (neither) from the secret's own rule."""
    fields = _read_values(value_from)
    rule = _rule(generate, length, size, classes, generate_field)
    if fields is not None and rule is not None:
        raise click.UsageError("give --value-from or --generate, not both")
    return client.set_secret_value(
        secret_id,
        fields=fields,
        generate=rule,
        from_rule=fields is None and rule is None,
        stage=stage,
        if_match=if_match,
    )


@secrets.command("promote")
@click.argument("secret_id")
@click.argument("version", type=click.IntRange(1, 999999999))
@IF_MATCH
@api_call()
def secrets_promote(client: SignerClient, secret_id: str, version: int, if_match: str | None) -> Any:
    """Make a staged version current (the previous one enters its overlap)."""
    return client.secret_version_action(secret_id, version, "promote", if_match=if_match)


def _state_command(name: str, action: str, doc: str) -> None:
    @secrets.command(name, help=doc)
    @click.argument("secret_id")
    @click.argument("version", type=click.IntRange(1, 999999999))
    @click.option("--reason", default=None, help="Why (kept with the version and in the audit log).")
    @IF_MATCH
    @api_call()
    def command(
        client: SignerClient, secret_id: str, version: int, reason: str | None, if_match: str | None
    ) -> Any:
        return client.secret_version_action(secret_id, version, action, reason=reason, if_match=if_match)


_state_command("disable-version", "disable", "Disable a version (not the current one).")
_state_command("enable-version", "enable", "Re-enable a disabled version.")
_state_command(
    "destroy-version",
    "destroy",
    "Destroy a version for good: its wrapped data key and sealed fields are erased (audited).",
)


@secrets.command("folder-defaults")
@click.argument("folder")
@click.option("--rotation-interval-seconds", type=click.IntRange(0), default=None, help="0 clears it.")
@click.option("--overlap-seconds", type=click.IntRange(0), default=None, help="0 clears it.")
@api_call()
def secrets_folder_defaults(
    client: SignerClient, folder: str, rotation_interval_seconds: int | None, overlap_seconds: int | None
) -> Any:
    """Show (no option) or set a folder's defaults for secrets created in it or below from now on.
    Setting replaces both: an option not given clears that default."""
    if rotation_interval_seconds is None and overlap_seconds is None:
        return client.secret_folder_defaults(folder)
    return client.set_secret_folder_defaults(folder, rotation_interval_seconds, overlap_seconds)


COMMANDS: tuple[click.Command, ...] = ()
