"""``signer approvals list / show / approve / reject / cancel / result``: approvers at the command line.

A deliberately minimal synchronous client (``urllib``, one request per command): the REST client and CLI
pattern being built on the cli-client branch had not reached main when this was written; these commands
keep to its conventions (``--server``, a token from ``SIGNER_TOKEN`` or ``--token-file``, never from the
command line; JSON on stdout; the problem document on stderr and a non-zero exit on an error) so that they
can move onto that client unchanged in behaviour.

``approve`` shows the decoded request first and sends the digest it showed; ``--digest`` pins the digest
the approver checked elsewhere (the server refuses with ``approval_mismatch`` if the request under that id
is not that payload). ``--ed25519-key`` signs the approval (``signer-approval:v1:<id>:<decision>:<digest>``)
with the approver's registered key, for rules that demand signed approvals.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

EXIT_API = 3
EXIT_CONNECTION = 4
EXIT_USAGE = 2


class _Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _token(token_file: str | None) -> str:
    if token_file:
        value = Path(token_file).read_text(encoding="utf-8").strip()
    else:
        value = os.environ.get("SIGNER_TOKEN", "").strip()
    if not value:
        raise _Failure(EXIT_USAGE, "no token: set SIGNER_TOKEN or pass --token-file")
    return value


def _call(server: str, token: str, method: str, path: str, body: Any = None, timeout: float = 90) -> Any:
    if urllib.parse.urlsplit(server).scheme not in ("http", "https"):
        raise _Failure(EXIT_USAGE, "--server must be an http or https URL")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rstrip("/") + path, data=data, method=method)  # noqa: S310
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        problem = exc.read().decode("utf-8", "replace")
        raise _Failure(EXIT_API, problem) from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Failure(EXIT_CONNECTION, f"cannot reach the signer: {type(exc).__name__}") from None


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _run(action: Any) -> None:
    try:
        action()
    except _Failure as failure:
        click.echo(str(failure), err=True)
        sys.exit(failure.code)


_server = click.option(
    "--server", envvar="SIGNER_SERVER", default="http://127.0.0.1:8080", show_default=True, help="Signer URL."
)
_token_file = click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the token.")


@click.group("approvals")
def approvals() -> None:
    """Pending high-risk requests: list, inspect, approve, reject."""


@approvals.command("list")
@click.option("--state", default=None, help="pending, approved, signed, failed, rejected, expired, cancelled")
@_server
@_token_file
def list_cmd(state: str | None, server: str, token_file: str | None) -> None:
    query = "" if state is None else "?state=" + _q(state)
    _run(lambda: _out(_call(server, _token(token_file), "GET", "/v1/approvals" + query)))


@approvals.command("show")
@click.argument("approval_id")
@_server
@_token_file
def show_cmd(approval_id: str, server: str, token_file: str | None) -> None:
    _run(lambda: _out(_call(server, _token(token_file), "GET", f"/v1/approvals/{_q(approval_id)}")))


def _vote(
    decision: str,
    approval_id: str,
    digest: str | None,
    key_file: str | None,
    server: str,
    token_file: str | None,
) -> None:
    token = _token(token_file)
    shown = _call(server, token, "GET", f"/v1/approvals/{_q(approval_id)}")
    click.echo(
        json.dumps({"request": shown.get("view"), "payload_digest": shown.get("payload_digest")}, indent=2),
        err=True,
    )
    named = digest or shown["payload_digest"]
    body: dict[str, Any] = {"digest": named}
    if key_file:
        key = load_pem_private_key(Path(key_file).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise _Failure(EXIT_USAGE, "--ed25519-key must be an Ed25519 private key (PEM)")
        message = f"signer-approval:v1:{approval_id}:{decision}:{named.lower().removeprefix('0x')}".encode()
        body["signature"] = key.sign(message).hex()
    _out(_call(server, token, "POST", f"/v1/approvals/{_q(approval_id)}/{decision}", body))


@approvals.command("approve")
@click.argument("approval_id")
@click.option("--digest", default=None, help="The payload digest you checked (refused if it differs).")
@click.option("--ed25519-key", "key_file", type=click.Path(dir_okay=False), help="Sign the approval (PEM).")
@_server
@_token_file
def approve_cmd(
    approval_id: str, digest: str | None, key_file: str | None, server: str, token_file: str | None
) -> None:
    _run(lambda: _vote("approve", approval_id, digest, key_file, server, token_file))


@approvals.command("reject")
@click.argument("approval_id")
@click.option("--digest", default=None, help="The payload digest you checked (refused if it differs).")
@click.option("--ed25519-key", "key_file", type=click.Path(dir_okay=False), help="Sign the rejection (PEM).")
@_server
@_token_file
def reject_cmd(
    approval_id: str, digest: str | None, key_file: str | None, server: str, token_file: str | None
) -> None:
    _run(lambda: _vote("reject", approval_id, digest, key_file, server, token_file))


@approvals.command("cancel")
@click.argument("approval_id")
@_server
@_token_file
def cancel_cmd(approval_id: str, server: str, token_file: str | None) -> None:
    _run(lambda: _out(_call(server, _token(token_file), "POST", f"/v1/approvals/{_q(approval_id)}/cancel")))


@approvals.command("result")
@click.argument("approval_id")
@click.option("--wait", type=click.IntRange(0, 60), default=0, help="Long-poll up to this many seconds.")
@_server
@_token_file
def result_cmd(approval_id: str, wait: int, server: str, token_file: str | None) -> None:
    path = f"/v1/approvals/{_q(approval_id)}/result?wait={wait}"
    _run(lambda: _out(_call(server, _token(token_file), "GET", path)))


@approvals.command("register-key")
@click.option(
    "--ed25519-key", "key_file", required=True, type=click.Path(dir_okay=False), help="PEM private key."
)
@_server
@_token_file
def register_key_cmd(key_file: str, server: str, token_file: str | None) -> None:
    """Register the public half of an Ed25519 key for signed approvals."""

    def action() -> None:
        key = load_pem_private_key(Path(key_file).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise _Failure(EXIT_USAGE, "--ed25519-key must be an Ed25519 private key (PEM)")
        public = key.public_key().public_bytes_raw().hex()
        body = {"scheme": "ed25519", "public_key": public}
        _out(_call(server, _token(token_file), "PUT", "/v1/approvers/me/key", body))

    _run(action)
