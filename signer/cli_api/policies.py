"""Policy commands: documents, versions, attachments, shadow reports and the dry run.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from typing import Any

import click

from signer.cli_api.common import api_call, read_input, read_json_object
from signer.client import SignerClient

POLICY_COLUMNS = ("policy_id", "version", "digest", "created_at")


ATTACHMENT_COLUMNS = ("id", "policy_id", "version", "mode", "scope", "resource", "detached_at")


_YAML_SUFFIXES = (".yaml", ".yml")


@click.group()
def policies() -> None:
    """Policy documents, their attachments to resources (keys, secrets) or scopes, dry runs and shadow
    reports."""


@policies.command("create")
@click.argument("source", default="-", metavar="[FILE]")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    default=None,
    help="Document format [default: yaml for .yaml/.yml files, else json].",
)
@api_call()
def policies_create(client: SignerClient, source: str, fmt: str | None) -> Any:
    """Store the next version of a policy from a JSON or YAML document (its 'version' must be the next)."""
    fmt = fmt or ("yaml" if source.endswith(_YAML_SUFFIXES) else "json")
    document = read_input(source).encode("utf-8")
    return client.create_policy(document, "application/yaml" if fmt == "yaml" else "application/json")


@policies.command("list")
@api_call(columns=POLICY_COLUMNS)
def policies_list(client: SignerClient) -> Any:
    """List policies (latest version of each)."""
    return client.list_policies()


@policies.command("show")
@click.argument("policy_id")
@api_call()
def policies_show(client: SignerClient, policy_id: str) -> Any:
    """Show every version of a policy with its document (use --json to read the documents whole)."""
    return client.get_policy(policy_id)


@policies.command("attach")
@click.argument("policy_id")
@click.option("--version", "version", type=click.IntRange(min=1), required=True, help="Policy version.")
@click.option(
    "--resource",
    "resource",
    default=None,
    metavar="TYPE:ID",
    help="Put it in force on one resource: key:ID or secret:ID (or --key, --scope).",
)
@click.option("--key", "key_id", default=None, help="Put it in force on this key (key:ID as --resource).")
@click.option(
    "--scope", default=None, help="Put it in force on every key and secret under this scope (or --resource)."
)
@click.option(
    "--mode",
    type=click.Choice(["live", "shadow"]),
    default="live",
    show_default=True,
    help="shadow: decisions are recorded for the shadow report, never enforced.",
)
@api_call()
def policies_attach(
    client: SignerClient,
    policy_id: str,
    version: int,
    resource: str | None,
    key_id: str | None,
    scope: str | None,
    mode: str,
) -> Any:
    """Attach a policy version to one resource (a key or a secret) or a scope."""
    reference = None
    if resource is not None:
        kind, sep, resource_id = resource.partition(":")
        # The kind is the server's to check (it answers 400 invalid_attachment for one it has not).
        if not sep or not kind or not resource_id:
            raise click.BadParameter("expected TYPE:ID, e.g. secret:sec_...", param_hint="--resource")
        reference = (kind, resource_id)
    return client.attach_policy(policy_id, version, key_id=key_id, scope=scope, resource=reference, mode=mode)


@policies.command("attachments")
@click.option("--include-detached", is_flag=True, help="Also list detached attachments.")
@api_call(columns=ATTACHMENT_COLUMNS)
def policies_attachments(client: SignerClient, include_detached: bool) -> Any:
    """List policy attachments."""
    return client.list_attachments(include_detached)


@policies.command("detach")
@click.argument("attachment_id")
@api_call()
def policies_detach(client: SignerClient, attachment_id: str) -> Any:
    """Detach a policy attachment."""
    return client.detach_policy(attachment_id)


@policies.command("shadow-report")
@click.argument("attachment_id")
@api_call()
def policies_shadow_report(client: SignerClient, attachment_id: str) -> Any:
    """What a shadow attachment would have decided, compared with what was decided."""
    return client.shadow_report(attachment_id)


@policies.command("dry-run")
@click.argument("source", default="-", metavar="[FILE]")
@click.option("--key", "key_id", required=True, help="Key the request names.")
@click.option(
    "--operation",
    type=click.Choice(
        ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"]
    ),
    required=True,
    help="Operation to judge.",
)
@click.option("--principal", "principal_id", default=None, help="Judge as this principal (admin).")
@click.option("--candidate", default=None, metavar="POLICY_ID:VERSION", help="Also judge a policy version.")
@click.option("--candidate-key", default=None, help="Where the candidate would attach: a key …")
@click.option("--candidate-scope", default=None, help="… or a scope.")
@api_call()
def policies_dry_run(
    client: SignerClient,
    source: str,
    key_id: str,
    operation: str,
    principal_id: str | None,
    candidate: str | None,
    candidate_key: str | None,
    candidate_scope: str | None,
) -> Any:
    """Judge a sign request without signing. FILE (or stdin) holds the operation's fields as JSON, e.g.
    {"transaction": {...}}, {"message": "hi"}, {"typed_data": {...}} or {"digest": "0x…"}."""
    request: dict[str, Any] = {**read_json_object(source), "key_id": key_id, "operation": operation}
    if principal_id is not None:
        request["principal_id"] = principal_id
    if candidate is not None:
        policy_id, _, version = candidate.rpartition(":")
        if not policy_id or not version.isdigit():
            raise click.BadParameter("expected POLICY_ID:VERSION", param_hint="--candidate")
        where = {"key_id": candidate_key} if candidate_key else {"scope": candidate_scope}
        request["candidate"] = {"policy_id": policy_id, "version": int(version), **where}
    return client.dry_run(request)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (policies,)
