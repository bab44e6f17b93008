"""Identity commands: ``auth refresh``, ``principals`` and ``tokens``. New credentials go to a 0600 file with
``--credentials-out``, never to argv.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from signer.cli_api.common import api_call, credentials_out_option, store_credentials
from signer.client import ClientConfigError, SignerClient, read_token_file


@click.group()
def auth() -> None:
    """Tokens for the caller itself."""


@auth.command("refresh")
@click.option(
    "--refresh-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The refresh token alone, or credentials JSON holding 'refresh_token'.",
)
@credentials_out_option
@api_call(need_token=False)
def auth_refresh(client: SignerClient, refresh_token_file: Path, credentials_out: Path | None) -> Any:
    """Trade a refresh token for a new access + refresh pair (the old refresh token stops working)."""
    try:
        token = read_token_file(refresh_token_file, field="refresh_token")
    except ClientConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    result = client.refresh(token)
    return store_credentials(result, result, credentials_out)


PRINCIPAL_COLUMNS = ("id", "name", "role", "disabled", "created_at")


@click.group()
def principals() -> None:
    """Principals: people and services that hold tokens (admin)."""


@principals.command("create")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(["admin", "service", "approver", "auditor"]), required=True, help="Role."
)
@credentials_out_option
@api_call()
def principals_create(client: SignerClient, name: str, role: str, credentials_out: Path | None) -> Any:
    """Create a principal; its first credentials are shown once (or written to --credentials-out)."""
    result = client.create_principal(name, role)
    if credentials_out is None:
        return result
    return {**result, "credentials": store_credentials(result, result.get("credentials"), credentials_out)}


@principals.command("list")
@api_call(columns=PRINCIPAL_COLUMNS)
def principals_list(client: SignerClient) -> Any:
    """List principals."""
    return client.list_principals()


@principals.command("disable")
@click.argument("principal_id")
@api_call()
def principals_disable(client: SignerClient, principal_id: str) -> Any:
    """Disable a principal: its tokens stop working at once."""
    return client.set_principal_disabled(principal_id, True)


@principals.command("enable")
@click.argument("principal_id")
@api_call()
def principals_enable(client: SignerClient, principal_id: str) -> Any:
    """Enable a disabled principal."""
    return client.set_principal_disabled(principal_id, False)


CERT_COLUMNS = ("fingerprint", "principal_id", "created_at", "expires_at", "revoked_at")


@principals.command("add-cert")
@click.argument("principal_id")
@click.argument("cert_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--ttl-seconds",
    type=click.IntRange(1, 10 * 365 * 24 * 3600),
    default=None,
    help="End the mapping this many seconds from now if that is before the certificate's notAfter.",
)
@api_call()
def principals_add_cert(
    client: SignerClient, principal_id: str, cert_file: Path, ttl_seconds: int | None
) -> Any:
    """Register a TLS client certificate (PEM file) for a service principal: over TLS with client
    certificates on, a request with it and no Authorization header runs as that principal."""
    try:
        pem = cert_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise click.BadParameter(f"cannot read {cert_file} as a PEM file") from None
    return client.add_client_certificate(principal_id, pem, ttl_seconds)


@principals.command("list-certs")
@click.argument("principal_id")
@api_call(columns=CERT_COLUMNS)
def principals_list_certs(client: SignerClient, principal_id: str) -> Any:
    """List a principal's client certificates (by SHA-256 fingerprint)."""
    return client.list_client_certificates(principal_id)


@principals.command("revoke-cert")
@click.argument("principal_id")
@click.argument("fingerprint")
@api_call()
def principals_revoke_cert(client: SignerClient, principal_id: str, fingerprint: str) -> Any:
    """Revoke a client certificate's mapping: the next request with it is refused."""
    return client.revoke_client_certificate(principal_id, fingerprint.replace(":", "").lower())


@click.group()
def tokens() -> None:
    """Bearer tokens of principals."""


@tokens.command("issue")
@click.argument("principal_id")
@credentials_out_option
@api_call()
def tokens_issue(client: SignerClient, principal_id: str, credentials_out: Path | None) -> Any:
    """Issue new credentials for a principal (admin)."""
    result = client.issue_tokens(principal_id)
    return store_credentials(result, result, credentials_out)


@tokens.command("issue-kms")
@click.argument("principal_id")
@click.option(
    "--ttl-seconds",
    type=click.IntRange(0, 10 * 365 * 24 * 3600),
    default=None,
    help="Lifetime (0: none); the server's kms_credential_ttl_seconds when omitted.",
)
@credentials_out_option
@api_call()
def tokens_issue_kms(
    client: SignerClient, principal_id: str, ttl_seconds: int | None, credentials_out: Path | None
) -> Any:
    """Issue an AWS KMS (SigV4) credential to a service principal (admin); revoke with
    ``tokens revoke ACCESS_KEY_ID``."""
    result = client.issue_kms_credential(principal_id, ttl_seconds)
    return store_credentials(result, result, credentials_out)


@tokens.command("revoke")
@click.argument("token_id")
@api_call()
def tokens_revoke(client: SignerClient, token_id: str) -> Any:
    """Revoke a token by id (admin, or the token's owner)."""
    return client.revoke_token(token_id)


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (auth, principals, tokens)
