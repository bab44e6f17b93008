"""Secret commands: ``secrets create|list|show|update|set-value|delete|fetch``.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render. A
value never comes from argv (visible in ``ps``): ``--value-from NAME=PATH`` reads it from a file, or from
standard input when PATH is ``-``; or the server generates it (``--generate``). Only ``fetch`` prints
values.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

import click

from signer.cli_api.common import Raw, api_call
from signer.client import SignerClient

SECRET_COLUMNS = ("id", "name", "folder", "category", "owner", "current_version", "updated_at")
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
) -> Any:
    """Create a secret (needs a `create` grant on the folder; grants nobody anything)."""
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
) -> Any:
    """Change a secret's metadata (not its name, folder or value)."""
    changes = {
        "description": description,
        "tags": list(tags) or None,
        "category": category,
        "consumers": list(consumers) or None,
        "owner_group": owner_group,
        "owner_principal": owner_principal,
    }
    return client.update_secret(secret_id, {k: v for k, v in changes.items() if v is not None})


@secrets.command("set-value")
@click.argument("secret_id")
@_value_options
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
) -> Any:
    """Set a new value: a new version, what the next fetch returns."""
    fields = _read_values(value_from)
    rule = _rule(generate, length, size, classes, generate_field)
    if (fields is None) == (rule is None):
        raise click.UsageError("give --value-from or --generate (not both)")
    return client.set_secret_value(secret_id, fields=fields, generate=rule)


@secrets.command("delete")
@click.argument("secret_id")
@api_call()
def secrets_delete(client: SignerClient, secret_id: str) -> Any:
    """Delete a secret and every version of its value."""
    return client.delete_secret(secret_id)


@secrets.command("fetch")
@click.argument("secret_id")
@click.option("--version", type=click.IntRange(min=1), default=None, help="A named version [current].")
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
    field: str | None,
    workload: str | None,
    approval_id: str | None,
) -> Any:
    """Fetch a secret's values (audited: who, workload, version, fields; never the value). A read that
    policy sends to approvers prints the pending request; once approved, release it with --approval."""
    return client.fetch_secret(
        secret_id, version=version, field=field, workload=workload, approval_id=approval_id
    )


# -- values into an environment: env and exec --------------------------------------------------------

# A reference by id: sec_<hex>[#FIELD][@VERSION] (secret:// paths by folder and name are not built yet).
_REF = re.compile(
    r"(?P<id>sec_[0-9a-f]{1,64})(?:#(?P<field>[A-Za-z_][A-Za-z0-9_.-]{0,63}))?(?:@(?P<version>[1-9][0-9]{0,9}))?\Z"
)
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _variable(secret_name: str, field: str) -> str:
    """``stripe-live`` + ``STRIPE_SECRET`` -> ``STRIPE_LIVE_STRIPE_SECRET``."""
    return re.sub(r"[^A-Z0-9_]", "_", f"{secret_name}_{field}".upper())


def resolve(client: SignerClient, specs: tuple[str, ...], workload: str | None) -> dict[str, str]:
    """The variables ``specs`` name (``REF`` or ``VAR=REF``), fetched from the server.

    ``VAR=REF`` sets VAR to one field (REF names it with ``#FIELD``); a bare REF sets every field of the
    secret as ``NAME_FIELD``. A name that is not a valid variable, or two references that set the same
    variable, are refused before anything is printed or started.
    """
    variables: dict[str, str] = {}
    for spec in specs:
        var, _, ref = spec.rpartition("=")
        found = _REF.match(ref)
        if found is None:
            raise click.BadParameter(
                f"{ref!r} is not a reference: sec_ID[#FIELD][@VERSION]", param_hint="REF"
            )
        field, version = found["field"], found["version"]
        if var and field is None:
            raise click.BadParameter(
                f"{var}=... names one field: add #FIELD to the reference", param_hint="REF"
            )
        answer = client.fetch_secret(
            found["id"], version=None if version is None else int(version), field=field, workload=workload
        )
        if answer.get("state") == "pending_approval":
            # Nothing was read: approvers must allow it first, then `secrets fetch --approval` releases it.
            raise click.ClickException(
                f"reading {found['id']} needs approval: request {answer['approval']['id']} is waiting"
            )
        values: dict[str, str] = answer["values"]
        named = {var: values[field]} if var else {_variable(answer["name"], f): v for f, v in values.items()}
        for name, value in named.items():
            if not _VAR.match(name):
                raise click.BadParameter(
                    f"{name!r} is not a valid environment variable name", param_hint="REF"
                )
            if name in variables:
                raise click.BadParameter(f"two references set {name}", param_hint="REF")
            if "\x00" in value:
                raise click.BadParameter(f"{name}: a value holding NUL cannot be an environment variable")
            variables[name] = value
    return variables


def _shell_quote(value: str) -> str:
    # Single quotes keep everything literal (newlines included); a quote closes, escapes and reopens.
    return "'" + value.replace("'", "'\\''") + "'"


def _dotenv_quote(value: str) -> str:
    # Double quotes as a POSIX shell reads them (so the file can be sourced): \\ " $ ` escaped, newlines
    # kept as they are.
    for special in ("\\", '"', "$", "`"):
        value = value.replace(special, "\\" + special)
    return '"' + value + '"'


def render_env(variables: dict[str, str], form: str) -> str:
    if form == "json":
        return json.dumps(variables, indent=2, sort_keys=True)
    if form == "shell":
        return "\n".join(f"export {k}={_shell_quote(v)}" for k, v in sorted(variables.items()))
    return "\n".join(f"{k}={_dotenv_quote(v)}" for k, v in sorted(variables.items()))


@secrets.command("env")
@click.argument("refs", nargs=-1, required=True)
@click.option(
    "--format", "form", type=click.Choice(["dotenv", "json", "shell"]), default="dotenv", show_default=True
)
@click.option("--workload", default=None, help="Which workload reads them (written to the audit log).")
@api_call()
def secrets_env(client: SignerClient, refs: tuple[str, ...], form: str, workload: str | None) -> Any:
    """Print secrets as environment variables: REF or VAR=REF (REF: sec_ID[#FIELD][@VERSION]).

    ``shell`` (``export NAME='...'``) and ``dotenv`` (``NAME="..."``, with backslash, quote, $ and
    backtick escaped) are both safe to ``source``, multi-line values included; ``json`` is one object."""
    return Raw(render_env(resolve(client, refs, workload), form))


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--secret", "specs", multiple=True, required=True, help="VAR=REF or REF (repeatable).")
@click.option("--workload", default=None, help="Which workload reads them (written to the audit log).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@api_call()
def exec_command(
    client: SignerClient, specs: tuple[str, ...], workload: str | None, command: tuple[str, ...]
) -> Any:
    """Run COMMAND with secrets in its environment: signer exec --secret VAR=REF -- COMMAND ARGS.

    Nothing is written to disk; signals are passed on to the command, and its exit status is ours."""
    variables = resolve(client, specs, workload)
    try:
        process = subprocess.Popen(list(command), env={**os.environ, **variables})  # noqa: S603 - the caller's command
    except OSError as exc:
        raise click.UsageError(f"cannot start {command[0]!r}: {exc.strerror}") from None
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {sig: signal.signal(sig, lambda number, _: process.send_signal(number)) for sig in forwarded}
    try:
        status = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(128 - status if status < 0 else status)


# ``signer exec`` is a top-level command beside the secrets group.
COMMANDS: tuple[click.Command, ...] = (secrets, exec_command)
