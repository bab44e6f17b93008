"""Secret commands: ``secrets create|list|show|update|set-value|disable|enable|delete|fetch`` (``env``
and ``import``: ``secret_exec``).

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render. A
value never comes from argv (visible in ``ps``): ``--value-from NAME=PATH`` reads it from a file, or from
standard input when PATH is ``-``; or the server generates it (``--generate``). Only ``fetch`` prints
values.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from signer.cli_api.common import api_call
from signer.client import SignerClient

SECRET_COLUMNS = (
    "id",
    "name",
    "folder",
    "category",
    "owner",
    "backend",
    "state",
    "current_version",
    "updated_at",
)
# --backend accepts the API's names and these short ones.
BACKENDS = {"aws": "aws_secrets_manager", "openbao": "openbao_kv2", "vault": "openbao_kv2"}
CATEGORIES = ("api_key", "oauth_token", "database", "registry", "publication", "infrastructure", "other")


@click.group()
def secrets() -> None:
    """Secrets sealed under keys held in the token."""


def _read_values(pairs: tuple[str, ...]) -> dict[str, str] | None:
    if not pairs:
        return None
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(
                "expected NAME=PATH (PATH '-' reads standard input)", param_hint="--value-from"
            )
        if path == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise click.BadParameter(
                    f"cannot read {path}: {exc.strerror}", param_hint="--value-from"
                ) from None
        # One trailing newline is the file's, not the value's (echo and editors add it).
        values[name] = text[:-1] if text.endswith("\n") else text
    return values


def _rule(
    kind: str | None, length: int | None, size: int | None, classes: tuple[str, ...], field: str | None
) -> dict[str, Any] | None:
    if kind is None:
        return None
    rule: dict[str, Any] = {
        "kind": kind,
        "length": length,
        "bytes": size,
        "classes": list(classes) or None,
        "field": field,
    }
    return {k: v for k, v in rule.items() if v is not None}


def _value_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--value-from",
                "value_from",
                multiple=True,
                help="NAME=PATH: a field's value from a file ('-': stdin).",
            ),
            click.option(
                "--generate",
                type=click.Choice(["chars", "hex", "base64", "uuid"]),
                default=None,
                help="Let the server make the value.",
            ),
            click.option("--length", type=click.IntRange(8, 4096), default=None, help="chars: length."),
            click.option(
                "--bytes",
                "size",
                type=click.IntRange(8, 4096),
                default=None,
                help="hex, base64: random bytes.",
            ),
            click.option(
                "--class",
                "classes",
                multiple=True,
                type=click.Choice(["lower", "upper", "digits", "symbols"]),
                help="chars: a character class (repeatable).",
            ),
            click.option("--generate-field", default=None, help="The generated value's field name [value]."),
        ]
    ):
        fn = option(fn)
    return fn


@secrets.command("create")
@click.option("--folder", required=True, help="Folder (a scope path), e.g. acme/payments/prod.")
@click.option("--name", required=True, help="Name, e.g. stripe-live.")
@click.option("--owner-group", default=None, help="Owning group (or --owner-principal).")
@click.option("--owner-principal", default=None, help="Owning principal id (or --owner-group).")
@click.option("--description", default=None, help="What it is for.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--category", type=click.Choice(CATEGORIES), default=None, help="Category [other].")
@click.option("--consumer", "consumers", multiple=True, help="A workload that uses it (repeatable).")
@click.option(
    "--backend",
    type=click.Choice(["sealed", "aws", "openbao", "vault", "aws_secrets_manager", "openbao_kv2"]),
    default=None,
    help="Held by reference in AWS Secrets Manager or OpenBao/Vault KV v2 (with --ref) [sealed].",
)
@click.option("--ref", "reference", default=None, help="aws: the ARN or name; openbao: MOUNT/data/PATH.")
@_value_options
@api_call()
def secrets_create(
    client: SignerClient,
    folder: str,
    name: str,
    owner_group: str | None,
    owner_principal: str | None,
    description: str | None,
    tags: tuple[str, ...],
    category: str | None,
    consumers: tuple[str, ...],
    value_from: tuple[str, ...],
    generate: str | None,
    length: int | None,
    size: int | None,
    classes: tuple[str, ...],
    generate_field: str | None,
    backend: str | None,
    reference: str | None,
) -> Any:
    """Create a secret (needs a `create` grant on the folder; grants nobody anything).

    With --backend aws|openbao --ref REF the value stays in that store and is fetched from it at read
    time (no --value-from or --generate); grants, policy and audit are the same."""
    return client.create_secret(
        folder,
        name,
        owner_group=owner_group,
        owner_principal=owner_principal,
        fields=_read_values(value_from),
        generate=_rule(generate, length, size, classes, generate_field),
        description=description,
        tags=list(tags),
        category=category,
        consumers=list(consumers),
        backend=BACKENDS.get(backend, backend) if backend is not None else None,
        reference=reference,
    )


@secrets.command("list")
@click.option("--folder", default=None, help="Only this folder and below.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Page size.")
@click.option("--after", default=None, help="Continue after this secret id.")
@api_call(columns=SECRET_COLUMNS)
def secrets_list(client: SignerClient, folder: str | None, limit: int, after: str | None) -> Any:
    """List the secrets you may list (metadata only)."""
    return client.list_secrets(folder, limit=limit, after=after)


@secrets.command("show")
@click.argument("secret_id")
@api_call()
def secrets_show(client: SignerClient, secret_id: str) -> Any:
    """Show a secret's metadata and versions (never a value)."""
    return client.get_secret(secret_id)


@secrets.command("update")
@click.argument("secret_id")
@click.option("--description", default=None, help="What it is for.")
@click.option("--tag", "tags", multiple=True, help="Replace the tags (repeatable).")
@click.option("--category", type=click.Choice(CATEGORIES), default=None, help="Category.")
@click.option("--consumer", "consumers", multiple=True, help="Replace the consumers (repeatable).")
@click.option("--owner-group", default=None, help="New owning group.")
@click.option("--owner-principal", default=None, help="New owning principal id.")
@click.option(
    "--pin",
    "pins",
    multiple=True,
    help="WORKLOAD=VERSION: that consumer's fetches get VERSION (repeatable; replaces all pins).",
)
@click.option("--unpin-all", is_flag=True, help="Remove every pin.")
@click.option(
    "--overlap-seconds", type=click.IntRange(0), default=None, help="Previous version readable for."
)
@click.option("--rotation-interval-seconds", type=click.IntRange(0), default=None, help="Rotate every.")
@click.option("--if-match", "if_match", default=None, help='Only if unchanged: the ETag "r<revision>".')
@api_call()
def secrets_update(
    client: SignerClient,
    secret_id: str,
    description: str | None,
    tags: tuple[str, ...],
    category: str | None,
    consumers: tuple[str, ...],
    owner_group: str | None,
    owner_principal: str | None,
    pins: tuple[str, ...],
    unpin_all: bool,
    overlap_seconds: int | None,
    rotation_interval_seconds: int | None,
    if_match: str | None,
) -> Any:
    """Change a secret's metadata (not its name, folder or value), pins, overlap or rotation interval."""
    changes: dict[str, Any] = {
        "description": description,
        "tags": list(tags) or None,
        "category": category,
        "consumers": list(consumers) or None,
        "owner_group": owner_group,
        "owner_principal": owner_principal,
        "overlap_seconds": overlap_seconds,
        "rotation_interval_seconds": rotation_interval_seconds,
    }
    if pins or unpin_all:
        changes["pins"] = {}
        for pin in pins:
            workload, sep, number = pin.partition("=")
            if not sep or not workload or not number.isdigit():
                raise click.BadParameter("expected WORKLOAD=VERSION", param_hint="--pin")
            changes["pins"][workload] = int(number)
    return client.update_secret(
        secret_id, {k: v for k, v in changes.items() if v is not None}, if_match=if_match
    )


@secrets.command("set-value")
@click.argument("secret_id")
@_value_options
@click.option("--if-match", "if_match", default=None, help='Only if unchanged: "r<revision>" or a version.')
@api_call()
def secrets_set_value(
    client: SignerClient,
    secret_id: str,
    value_from: tuple[str, ...],
    generate: str | None,
    length: int | None,
    size: int | None,
    classes: tuple[str, ...],
    generate_field: str | None,
    if_match: str | None,
) -> Any:
    """Set a new value: a new version, what the next fetch returns."""
    fields = _read_values(value_from)
    rule = _rule(generate, length, size, classes, generate_field)
    if (fields is None) == (rule is None):
        raise click.UsageError("give --value-from or --generate (not both)")
    return client.set_secret_value(secret_id, fields=fields, generate=rule, if_match=if_match)


@secrets.command("delete")
@click.argument("secret_id")
@api_call()
def secrets_delete(client: SignerClient, secret_id: str) -> Any:
    """Delete a secret and every version of its value."""
    return client.delete_secret(secret_id)


def _state_command(name: str, action: str, review: str, doc: str) -> None:
    @secrets.command(name, help=doc)
    @click.argument("name_or_id")
    @click.option("--reason", default=None, help="Why (kept with the secret and in the audit log).")
    @click.option("--dry-run", is_flag=True, help="Only the impact review: who loses or gets back reads.")
    @click.option(
        "--days", type=click.IntRange(0, 3660), default=30, show_default=True, help="--dry-run: usage window."
    )
    @click.option("--if-match", "if_match", default=None, help='Only if unchanged: the ETag "r<revision>".')
    @api_call()
    def command(
        client: SignerClient,
        name_or_id: str,
        reason: str | None,
        dry_run: bool,
        days: int,
        if_match: str | None,
    ) -> Any:
        secret_id = client.find_secret(name_or_id)
        if dry_run:
            return client.impact(review, secret_id, days)
        return client.set_secret_state(secret_id, action, reason=reason, if_match=if_match)


_state_command(
    "disable",
    "disable",
    "disable_secret",
    "Disable a whole secret (NAME_OR_ID: sec_... or FOLDER/NAME): every read of every version is "
    "refused until it is enabled; its grants and metadata stay. --dry-run shows who loses reads, which "
    "workloads fetched it and which references and consumers fail (admin, auditor).",
)
_state_command(
    "enable",
    "enable",
    "enable_secret",
    "Enable a disabled secret: its reads answer again. --dry-run shows who gets reads back.",
)


@secrets.command("fetch")
@click.argument("secret_id")
@click.option("--version", type=click.IntRange(min=1), default=None, help="A named version [current].")
@click.option(
    "--backend-version", default=None, help="AWS Secrets Manager: a VersionId or VersionStage label."
)
@click.option("--field", default=None, help="Only this field [all].")
@click.option("--workload", default=None, help="Which workload reads it (written to the audit log).")
@click.option(
    "--approval",
    "approval_id",
    default=None,
    help="Release this approved read (once; the version and fields its approvers approved).",
)
@api_call()
def secrets_fetch(
    client: SignerClient,
    secret_id: str,
    version: int | None,
    backend_version: str | None,
    field: str | None,
    workload: str | None,
    approval_id: str | None,
) -> Any:
    """Fetch a secret's values (audited: who, workload, version, fields; never the value). A read that
    policy sends to approvers prints the pending request; once approved, release it with --approval."""
    return client.fetch_secret(
        secret_id,
        version=version,
        field=field,
        workload=workload,
        backend_version=backend_version,
        approval_id=approval_id,
    )


# ``env``, ``import`` and the top-level ``exec`` are in ``signer.cli_api.secret_exec``.
COMMANDS: tuple[click.Command, ...] = (secrets,)
