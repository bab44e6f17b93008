"""Approval commands: ``approvals list|show|approve|reject|cancel|result|register-key``; a vote may be signed
with the approver's Ed25519 key, read from a local file (never sent).

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from signer.cli_api.common import (
    EXIT_DENIED,
    EXIT_FAILED,
    EXIT_PENDING,
    Outcome,
    api_call,
    render_record,
)
from signer.client import SignerClient
from signer.crypto.approver_signatures import load_ed25519_private_key, sign_approval


@click.group()
def approvals() -> None:
    """High-risk requests waiting for M-of-N approvers: list, inspect, approve, reject."""


@approvals.command("list")
@click.option("--state", default=None, help="pending, approved, signed, failed, rejected, expired, cancelled")
@click.option("--limit", type=click.IntRange(1, 1000), default=None)
@click.option("--after", default=None, help="The last id of the previous page.")
@api_call(columns=("id", "kind", "state", "key_id", "payload_digest", "expires_at"))
def approvals_list(client: SignerClient, state: str | None, limit: int | None, after: str | None) -> Any:
    """List the approval requests you may see."""
    return client.list_approvals(state=state, limit=limit, after=after)["items"]


@approvals.command("show")
@click.argument("approval_id")
@api_call()
def approvals_show(client: SignerClient, approval_id: str) -> Any:
    """Show a request decoded: what would be signed, who asked, who approved."""
    return client.get_approval(approval_id)


def _vote(
    client: SignerClient, decision: str, approval_id: str, digest: str | None, key_file: Path | None
) -> Any:
    if digest is None:
        # No digest given: show what is being decided on (stderr) and name the digest that was shown.
        shown = client.get_approval(approval_id)
        click.echo(
            render_record({"view": shown["view"], "payload_digest": shown["payload_digest"]}), err=True
        )
        digest = str(shown["payload_digest"])
    digest = digest.lower().removeprefix("0x")
    signature = None
    if key_file is not None:
        key = load_ed25519_private_key(key_file.read_bytes())
        if key is None:
            raise click.BadParameter("--ed25519-key must hold an Ed25519 private key (PEM)")
        signature = sign_approval(key, approval_id, decision, digest)
    return client.vote_approval(approval_id, decision, digest, signature)


_digest_option = click.option(
    "--digest",
    default=None,
    help="The payload digest you checked; refused (409) if the request is not that payload.",
)


_sign_option = click.option(
    "--ed25519-key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Sign the vote with your registered Ed25519 key (PEM), for rules that demand signed approvals.",
)


@approvals.command("approve")
@click.argument("approval_id")
@_digest_option
@_sign_option
@api_call(columns=None)
def approvals_approve(
    client: SignerClient, approval_id: str, digest: str | None, key_file: Path | None
) -> Any:
    """Approve exactly the payload with this digest."""
    return _vote(client, "approve", approval_id, digest, key_file)


@approvals.command("reject")
@click.argument("approval_id")
@_digest_option
@_sign_option
@api_call(columns=None)
def approvals_reject(
    client: SignerClient, approval_id: str, digest: str | None, key_file: Path | None
) -> Any:
    """Reject the request."""
    return _vote(client, "reject", approval_id, digest, key_file)


@approvals.command("cancel")
@click.argument("approval_id")
@api_call()
def approvals_cancel(client: SignerClient, approval_id: str) -> Any:
    """Cancel a pending request (its requester or an admin)."""
    return client.cancel_approval(approval_id)


@approvals.command("result")
@click.argument("approval_id")
@click.option("--wait", type=click.IntRange(0, 60), default=0, help="Long-poll up to this many seconds.")
@api_call()
def approvals_result(client: SignerClient, approval_id: str, wait: int) -> Any:
    """Fetch the signature of an approved request (once), or its state (exit 10 while it is still open,
    4 when rejected, 1 when expired, cancelled or failed)."""
    answer = client.approval_result(approval_id, wait=wait)
    state = answer.get("state") if isinstance(answer, dict) else None
    if state in ("pending", "approved"):
        return Outcome(answer, EXIT_PENDING)
    if state == "rejected":
        return Outcome(answer, EXIT_DENIED)
    if state in ("expired", "cancelled", "failed"):
        return Outcome(answer, EXIT_FAILED)
    return answer


@approvals.command("register-key")
@click.option("--ed25519-key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@api_call()
def approvals_register_key(client: SignerClient, key_file: Path) -> Any:
    """Register the public half of your Ed25519 key for signed approvals."""
    key = load_ed25519_private_key(key_file.read_bytes())
    if key is None:
        raise click.BadParameter("--ed25519-key must hold an Ed25519 private key (PEM)")
    return client.register_approver_key("ed25519", key.public_key().public_bytes_raw().hex())


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (approvals,)
