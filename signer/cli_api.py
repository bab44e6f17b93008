"""``signer`` commands that talk to a running server through ``signer.client.SignerClient``.

Every API command takes ``--server``, ``--token-file``, ``--ca-file``, ``--client-config`` and ``--json``
(added by ``api_call``); the token never comes from argv (argv is visible in ``ps``): ``--token-file``,
``SIGNER_TOKEN_FILE``, ``SIGNER_TOKEN`` or ``token_file`` in the client config. A token file may hold the
token alone or the credentials JSON that ``signer principals create --credentials-out`` writes.

Output: aligned tables (lists) or ``name  value`` lines (one object) for people; ``--json`` prints the
server's JSON answer (errors: the problem document, on stdout), except that ``--credentials-out`` keeps the
tokens out of it and the audit commands print ``{head, items, next}`` or an export summary. Exit codes are
``EXIT_*`` below.

Adding a command for a new endpoint
-----------------------------------
1. Add one method to ``SignerClient`` (``signer/client.py``) that calls ``self.request(...)``.
2. Add a click group if the resource is new (``@main.group()`` style, see ``keys`` below; register it in
   ``GROUPS``) and one function decorated with ``@<group>.command("verb")``, its own click options and
   arguments, then ``@api_call(columns=(...))``. The function receives the client first and returns the
   server's answer; ``api_call`` adds the connection options, renders tables or JSON, and turns errors
   into exit codes::

       @approvals.command("list")
       @click.option("--state", default=None, help="Only approvals in this state.")
       @api_call(columns=("id", "key_id", "state", "expires_at"))
       def approvals_list(client: SignerClient, state: str | None) -> Any:
           \"\"\"List approval requests.\"\"\"
           return client.list_approvals(state=state)

3. Run it in a live-server test (``tests/test_cli_client.py``, the ``cli`` fixture). The last two tests
   there fail while an ``api_call`` command was never run, or while a route in any ``RouteTableDef`` of
   ``signer.http`` was never requested by the CLI: a new endpoint without a command fails the suite.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from signer.client import (
    ApiError,
    ClientConfigError,
    ClientConnectionError,
    SignerClient,
    load_client_config,
    read_token_file,
)
from signer.crypto.approver_signatures import load_ed25519_private_key, sign_approval

EXIT_OK = 0
EXIT_FAILED = 1  # server error, unreachable server, unexpected answer
EXIT_USAGE = 2  # click's own: bad flags or arguments, unreadable input files
EXIT_CONFIG = 3  # local configuration invalid (server settings or client settings)
EXIT_DENIED = 4  # 401 unauthenticated, 403 forbidden / policy denied
EXIT_NOT_FOUND = 5  # 404 (a key you hold no grant on looks exactly like a missing one)
EXIT_INVALID = 6  # 400, 405, 413, 415, 422: the request itself is wrong
EXIT_CONFLICT = 7  # 409, e.g. key_disabled
EXIT_RATE_LIMITED = 8  # 429
EXIT_UNAVAILABLE = 9  # 503, 504: HSM, database or audit unavailable, deadline exceeded

EXIT_CODES_HELP = """\b
Exit codes:
  0  ok
  1  failed (server error, server unreachable, unexpected answer)
  2  usage error (bad flags or arguments)
  3  configuration error (invalid settings, token or CA file)
  4  denied (401 unauthenticated, 403 forbidden or policy denied)
  5  not found (404; an ungranted key looks missing)
  6  invalid request (400, 405, 413, 415, 422)
  7  conflict (409)
  8  rate limited (429)
  9  unavailable (503, 504)
"""


def exit_code_for_status(status: int) -> int:
    if status in (401, 403):
        return EXIT_DENIED
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (400, 405, 413, 415, 422):
        return EXIT_INVALID
    if status == 409:
        return EXIT_CONFLICT
    if status == 429:
        return EXIT_RATE_LIMITED
    if status in (503, 504):
        return EXIT_UNAVAILABLE
    return EXIT_FAILED


# -- output -----------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns with a header; the last column is not padded."""
    table = [[c.upper() for c in columns], *[[_cell(row.get(c)) for c in columns] for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    out = []
    for line in table:
        cells = [cell.ljust(widths[i]) if i < len(columns) - 1 else cell for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def render_record(record: Mapping[str, Any], prefix: str = "") -> str:
    """``name  value`` lines; nested objects are flattened as ``outer.inner``."""
    flat: list[tuple[str, str]] = []

    def walk(data: Mapping[str, Any], path: str) -> None:
        for key, value in data.items():
            name = f"{path}{key}"
            if isinstance(value, Mapping) and value:
                walk(value, name + ".")
            else:
                flat.append((name, _cell(value)))

    walk(record, prefix)
    width = max((len(name) for name, _ in flat), default=0)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in flat)


@dataclass(frozen=True)
class Outcome:
    """What a command returns when it must exit non-zero after printing its answer."""

    result: Any
    exit_code: int


class Raw(str):
    """Text a command prints as it is, with or without ``--json``."""


def emit(result: Any, as_json: bool, columns: Sequence[str] | None) -> None:
    if isinstance(result, Raw):
        click.echo(result)
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if isinstance(result, Mapping) and "items" in result and columns:
        click.echo(render_table(result["items"], columns))
        if result.get("next"):
            click.echo(f"more: repeat with --after {result['next']}", err=True)
    elif isinstance(result, list) and columns:
        click.echo(render_table(result, columns))
    elif isinstance(result, Mapping):
        click.echo(render_record(result))
    elif result is not None:
        click.echo(str(result))


def report_api_error(exc: ApiError, as_json: bool) -> int:
    code = exit_code_for_status(exc.status)
    if as_json:
        click.echo(json.dumps(exc.problem, indent=2))
    label = {
        EXIT_DENIED: "denied",
        EXIT_NOT_FOUND: "not found",
        EXIT_INVALID: "invalid request",
        EXIT_CONFLICT: "conflict",
        EXIT_RATE_LIMITED: "rate limited",
        EXIT_UNAVAILABLE: "unavailable",
    }.get(code, "failed")
    click.echo(f"signer: {label}: {exc.status} {exc.code}: {exc.detail}", err=True)
    for reason in exc.reasons:
        click.echo(f"  reason: {_cell(reason)}", err=True)
    if exc.request_id:
        click.echo(f"  request id: {exc.request_id}", err=True)
    return code


def write_private_json(path: Path, data: Any) -> None:
    """Write JSON to a 0600 file, atomically replacing it (so credentials can be rotated in place)."""
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _progress_wanted(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


# -- the decorator every API command uses ---------------------------------------------------------------

_CONNECTION_OPTIONS = (
    click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts (errors: the problem document)."
    ),
    click.option(
        "--server", default=None, help="Server URL [env SIGNER_SERVER; default http://127.0.0.1:8080]."
    ),
    click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File holding the bearer token or credentials JSON [env SIGNER_TOKEN_FILE, or SIGNER_TOKEN].",
    ),
    click.option(
        "--ca-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="CA bundle for TLS [env SIGNER_CA_FILE].",
    ),
    click.option(
        "--client-config",
        type=click.Path(dir_okay=False),
        default=None,
        help="Client TOML with server, token_file, ca_file "
        "[env SIGNER_CLIENT_CONFIG; default ~/.config/signer/client.toml].",
    ),
)


def api_call(
    columns: Sequence[str] | None = None, *, need_token: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., None]]:
    """Turn ``fn(client, **params) -> answer`` into a click callback with connection options, rendering and
    exit codes. Place it directly above the function, below the command's own options."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(
            as_json: bool,
            server: str | None,
            token_file: str | None,
            ca_file: str | None,
            client_config: str | None,
            **params: Any,
        ) -> None:
            try:
                config = load_client_config(
                    server=server,
                    token_file=token_file,
                    ca_file=ca_file,
                    config_file=client_config,
                    need_token=need_token,
                )
            except ClientConfigError as exc:
                click.echo(f"signer: error: {exc}", err=True)
                sys.exit(EXIT_CONFIG)
            _warn_plain_http(config.server, config.token is not None)
            _warn_open_token_file(config.token_file)
            client = SignerClient.from_config(config)
            try:
                result = fn(client, **params)
            except ApiError as exc:
                sys.exit(report_api_error(exc, as_json))
            except ClientConnectionError as exc:
                click.echo(f"signer: failed: {exc}", err=True)
                sys.exit(EXIT_FAILED)
            except ClientConfigError as exc:
                click.echo(f"signer: error: {exc}", err=True)
                sys.exit(EXIT_CONFIG)
            if isinstance(result, Outcome):
                emit(result.result, as_json, columns)
                sys.exit(result.exit_code)
            emit(result, as_json, columns)

        for option in reversed(_CONNECTION_OPTIONS):
            run = option(run)
        run.signer_api_command = True  # type: ignore[attr-defined]  # lets tests find every API command
        return run

    return decorate


def _warn_plain_http(server: str, with_token: bool) -> None:
    parts = urllib.parse.urlsplit(server)
    if with_token and parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"signer: warning: sending a bearer token to {parts.hostname} without TLS", err=True)


def _warn_open_token_file(path: Path | None) -> None:
    try:
        mode = path.stat().st_mode if path is not None else 0
    except OSError:
        return
    if mode & 0o077:
        click.echo(f"signer: warning: token file {path} is readable by others (chmod 600 it)", err=True)


def _writable_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    # Checked before the request: credentials the server has issued must not be lost to a typo.
    if value is not None and not os.access(value.expanduser().parent, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot write into {value.expanduser().parent}")
    return value


def _credentials_out_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--credentials-out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=_writable_dir,
        help="Write the new credentials to this 0600 file (usable as --token-file) instead of printing them.",
    )(fn)


def _store_credentials(result: Any, credentials: Any, out: Path | None) -> Any:
    """With ``--credentials-out``, the tokens go to the file and the answer keeps only their ids."""
    if out is None or not isinstance(credentials, Mapping):
        return result
    try:
        write_private_json(out, credentials)
    except OSError as exc:
        # The server has issued them already: printing them beats losing them.
        click.echo(
            f"signer: warning: cannot write {out} ({exc.strerror}); printing the credentials", err=True
        )
        return result
    click.echo(f"credentials written to {out}", err=True)
    return {k: v for k, v in credentials.items() if k not in ("access_token", "refresh_token")}


def _read_input(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None


def _read_json_object(path: str) -> dict[str, Any]:
    text = _read_input(path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a JSON object")
    return data


# -- commands ---------------------------------------------------------------------------------------


@click.command()
@api_call()
def whoami(client: SignerClient) -> Any:
    """Show who the token belongs to."""
    return client.whoami()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--server", default=None, help="Server URL [env SIGNER_SERVER].")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None, help="CA bundle for TLS.")
@click.option("--client-config", type=click.Path(dir_okay=False), default=None, help="Client TOML.")
def status(as_json: bool, server: str | None, ca_file: str | None, client_config: str | None) -> None:
    """Ask a running server whether it is ready (HSM and database answer); exit 9 when it is not."""
    try:
        config = load_client_config(
            server=server, ca_file=ca_file, config_file=client_config, need_token=False
        )
    except ClientConfigError as exc:
        click.echo(f"signer: error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        ready, body = SignerClient.from_config(config).ready()
    except (ClientConnectionError, ApiError) as exc:
        click.echo(f"signer: failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    emit(body, as_json, None)
    if not ready:
        sys.exit(EXIT_UNAVAILABLE)


@click.command()
@api_call(need_token=False)
def metrics(client: SignerClient) -> Any:
    """Print the server's Prometheus metrics (a token is needed unless it serves loopback callers)."""
    return client.metrics().rstrip("\n")


@click.command()
@api_call(need_token=False)
def openapi(client: SignerClient) -> Any:
    """Print the server's OpenAPI document (JSON)."""
    return Raw(json.dumps(client.openapi(), indent=2))


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
@_credentials_out_option
@api_call(need_token=False)
def auth_refresh(client: SignerClient, refresh_token_file: Path, credentials_out: Path | None) -> Any:
    """Trade a refresh token for a new access + refresh pair (the old refresh token stops working)."""
    try:
        token = read_token_file(refresh_token_file, field="refresh_token")
    except ClientConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    result = client.refresh(token)
    return _store_credentials(result, result, credentials_out)


PRINCIPAL_COLUMNS = ("id", "name", "role", "disabled", "created_at")


@click.group()
def principals() -> None:
    """Principals: people and services that hold tokens (admin)."""


@principals.command("create")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(["admin", "service", "approver", "auditor"]), required=True, help="Role."
)
@_credentials_out_option
@api_call()
def principals_create(client: SignerClient, name: str, role: str, credentials_out: Path | None) -> Any:
    """Create a principal; its first credentials are shown once (or written to --credentials-out)."""
    result = client.create_principal(name, role)
    if credentials_out is None:
        return result
    return {**result, "credentials": _store_credentials(result, result.get("credentials"), credentials_out)}


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


@click.group()
def tokens() -> None:
    """Bearer tokens of principals."""


@tokens.command("issue")
@click.argument("principal_id")
@_credentials_out_option
@api_call()
def tokens_issue(client: SignerClient, principal_id: str, credentials_out: Path | None) -> Any:
    """Issue new credentials for a principal (admin)."""
    result = client.issue_tokens(principal_id)
    return _store_credentials(result, result, credentials_out)


@tokens.command("revoke")
@click.argument("token_id")
@api_call()
def tokens_revoke(client: SignerClient, token_id: str) -> Any:
    """Revoke a token by id (admin, or the token's owner)."""
    return client.revoke_token(token_id)


KEY_COLUMNS = ("id", "label", "curve", "state", "address", "scope", "created_at")


@click.group()
def keys() -> None:
    """Keys held in the token."""


@keys.command("create")
@click.option("--curve", type=click.Choice(["secp256k1", "ed25519", "p256"]), required=True, help="Curve.")
@click.option("--label", required=True, help="Human label (letters, digits, spaces, '.', '_', '-').")
@click.option("--scope", default=None, help="Scope such as 'acme/payments/prod' [server default: default].")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@api_call()
def keys_create(
    client: SignerClient, curve: str, label: str, scope: str | None, tags: tuple[str, ...]
) -> Any:
    """Generate a key inside the token (admin)."""
    return client.create_key(curve, label, scope, list(tags))


@keys.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Page size.")
@click.option("--after", default=None, help="Continue after this key id.")
@api_call(columns=KEY_COLUMNS)
def keys_list(client: SignerClient, limit: int, after: str | None) -> Any:
    """List keys (services see only keys granted to them)."""
    return client.list_keys(limit=limit, after=after)


@keys.command("show")
@click.argument("key_id")
@api_call()
def keys_show(client: SignerClient, key_id: str) -> Any:
    """Show a key: public key, address, state and the token's attributes."""
    return client.get_key(key_id)


@keys.command("disable")
@click.argument("key_id")
@api_call()
def keys_disable(client: SignerClient, key_id: str) -> Any:
    """Disable a key: it signs nothing until enabled (admin)."""
    return client.disable_key(key_id)


@keys.command("enable")
@click.argument("key_id")
@api_call()
def keys_enable(client: SignerClient, key_id: str) -> Any:
    """Enable a disabled key (admin)."""
    return client.enable_key(key_id)


GRANT_COLUMNS = ("id", "principal_id", "group", "resource_id", "operations", "expires_at", "revoked")


@click.group()
def grants() -> None:
    """Grants: which principal may do which operations on which key (admin)."""


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


@grants.command("create")
@click.option("--principal", "principal_id", default=None, help="To this principal (or --group).")
@click.option("--group", default=None, help="To every member of this group (or --principal).")
@click.option("--key", "key_id", default=None, help="On this key (or --scope).")
@click.option("--scope", default=None, help="On every key under this scope (or --key).")
@click.option(
    "--operation",
    "operations",
    multiple=True,
    required=True,
    type=click.Choice(["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]),
    help="An operation to allow (repeatable).",
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
@api_call()
def grants_create(
    client: SignerClient,
    principal_id: str | None,
    group: str | None,
    key_id: str | None,
    scope: str | None,
    operations: tuple[str, ...],
    expires_at: str | None,
    max_uses: int | None,
    budgets: dict[str, str],
) -> Any:
    """Allow a principal or a group operations on a key or on every key under a scope."""
    return client.create_grant(
        list(operations),
        principal_id=principal_id,
        group=group,
        key_id=key_id,
        scope=scope,
        expires_at=expires_at,
        max_uses=max_uses,
        value_budgets=budgets,
    )


@grants.command("list")
@click.option("--principal", "principal_id", default=None, help="Only this principal's grants.")
@api_call(columns=GRANT_COLUMNS)
def grants_list(client: SignerClient, principal_id: str | None) -> Any:
    """List grants."""
    return client.list_grants(principal_id)


@grants.command("revoke")
@click.argument("grant_id")
@api_call()
def grants_revoke(client: SignerClient, grant_id: str) -> Any:
    """Revoke a grant."""
    return client.revoke_grant(grant_id)


@click.group()
def sign() -> None:
    """Sign with a key you hold a grant on (services)."""


_idempotency_option = click.option(
    "--idempotency-key",
    default=None,
    help="Sent as Idempotency-Key: a retry with the same key and request is executed at most once.",
)


@sign.command("transaction")
@click.argument("key_id")
@click.argument("source", default="-", metavar="[FILE]")
@click.option("--raw", is_flag=True, help="FILE holds an unsigned serialised transaction (0x hex), not JSON.")
@_idempotency_option
@api_call()
def sign_transaction(
    client: SignerClient, key_id: str, source: str, raw: bool, idempotency_key: str | None
) -> Any:
    """Sign a transaction given as JSON (JSON-RPC field names) in FILE or on stdin."""
    if raw:
        return client.sign_transaction(
            key_id, raw=_read_input(source).strip(), idempotency_key=idempotency_key
        )
    return client.sign_transaction(key_id, _read_json_object(source), idempotency_key=idempotency_key)


@sign.command("message")
@click.argument("key_id")
@click.argument("message", required=False)
@click.option(
    "--encoding",
    type=click.Choice(["utf8", "hex", "base64"]),
    default="utf8",
    show_default=True,
    help="How MESSAGE is written.",
)
@click.option("--file", "message_file", type=click.File("rb"), default=None, help="Sign this file's bytes.")
@_idempotency_option
@api_call()
def sign_message(
    client: SignerClient,
    key_id: str,
    message: str | None,
    encoding: str,
    message_file: Any,
    idempotency_key: str | None,
) -> Any:
    """Sign MESSAGE (EIP-191 personal_sign for secp256k1); without MESSAGE or --file, read stdin as text."""
    import base64

    if message_file is not None:
        if message is not None:
            raise click.UsageError("give MESSAGE or --file, not both")
        encoded = base64.b64encode(message_file.read()).decode("ascii")
        return client.sign_message(key_id, encoded, "base64", idempotency_key=idempotency_key)
    if message is None:
        message = sys.stdin.read()
    return client.sign_message(key_id, message, encoding, idempotency_key=idempotency_key)


@sign.command("typed-data")
@click.argument("key_id")
@click.argument("source", default="-", metavar="[FILE]")
@_idempotency_option
@api_call()
def sign_typed_data(client: SignerClient, key_id: str, source: str, idempotency_key: str | None) -> Any:
    """Sign EIP-712 typed data (types, primaryType, domain, message) from FILE or stdin."""
    return client.sign_typed_data(key_id, _read_json_object(source), idempotency_key=idempotency_key)


@sign.command("digest")
@click.argument("key_id")
@click.argument("digest")
@_idempotency_option
@api_call()
def sign_digest(client: SignerClient, key_id: str, digest: str, idempotency_key: str | None) -> Any:
    """Blind-sign a 32-byte digest (0x hex); needs the sign_raw grant and a policy allowing raw digests."""
    return client.sign_digest(key_id, digest, idempotency_key=idempotency_key)


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


POLICY_COLUMNS = ("policy_id", "version", "digest", "created_at")
ATTACHMENT_COLUMNS = ("id", "policy_id", "version", "mode", "scope", "key_id", "detached_at")
_YAML_SUFFIXES = (".yaml", ".yml")


@click.group()
def policies() -> None:
    """Policy documents, their attachments to keys or scopes, dry runs and shadow reports."""


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
    document = _read_input(source).encode("utf-8")
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
@click.option("--key", "key_id", default=None, help="Put it in force on this key (or --scope).")
@click.option("--scope", default=None, help="Put it in force on every key under this scope (or --key).")
@click.option(
    "--mode",
    type=click.Choice(["live", "shadow"]),
    default="live",
    show_default=True,
    help="shadow: decisions are recorded for the shadow report, never enforced.",
)
@api_call()
def policies_attach(
    client: SignerClient, policy_id: str, version: int, key_id: str | None, scope: str | None, mode: str
) -> Any:
    """Attach a policy version to a key or a scope."""
    return client.attach_policy(policy_id, version, key_id=key_id, scope=scope, mode=mode)


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
    type=click.Choice(["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]),
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
    request: dict[str, Any] = {**_read_json_object(source), "key_id": key_id, "operation": operation}
    if principal_id is not None:
        request["principal_id"] = principal_id
    if candidate is not None:
        policy_id, _, version = candidate.rpartition(":")
        if not policy_id or not version.isdigit():
            raise click.BadParameter("expected POLICY_ID:VERSION", param_hint="--candidate")
        where = {"key_id": candidate_key} if candidate_key else {"scope": candidate_scope}
        request["candidate"] = {"policy_id": policy_id, "version": int(version), **where}
    return client.dry_run(request)


AUDIT_COLUMNS = ("seq", "at", "kind", "request_id")


@click.command("events")
@click.option(
    "--after", type=click.IntRange(min=0), default=0, show_default=True, help="Start after this seq."
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Page size.")
@api_call(columns=AUDIT_COLUMNS)
def audit_events(client: SignerClient, after: int, limit: int) -> Any:
    """One page of the audit log (auditor, admin); --json gives {head, items, next}."""
    lines, head = client.audit_page(after, limit)
    items = [json.loads(line) for line in lines]
    last = items[-1]["seq"] if items else after
    return {"head": head, "items": items, "next": last if items and last < head else None}


@click.command("export")
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--after", type=click.IntRange(min=0), default=0, show_default=True, help="Start after this seq."
)
@click.option("--page-size", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--verify", "verify_after", is_flag=True, help="Verify the written file's chain.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@api_call()
def audit_export(
    client: SignerClient, output: Path, after: int, page_size: int, verify_after: bool, force: bool
) -> Any:
    """Stream every audit event to OUTPUT as JSONL ('-' for stdout); progress on stderr when it is a tty.

    The file appears under its name only when the export is complete (it is written as OUTPUT.partial).
    """
    to_stdout = str(output) == "-"
    if not to_stdout and output.exists() and not force:
        raise click.BadParameter(f"{output} exists (use --force to replace it)", param_hint="OUTPUT")
    partial = output.with_name(output.name + ".partial")
    events = client.audit_export(after, page_size)
    count, last = 0, after
    handle: TextIO = sys.stdout if to_stdout else open(partial, "w", encoding="utf-8")
    try:
        first = next(events, None)
        if first is not None and _progress_wanted():
            with click.progressbar(
                length=max(first[2] - after, 1), label="exporting audit events", file=sys.stderr
            ) as bar:
                for line, seq, _ in itertools.chain([first], events):
                    handle.write(line)
                    bar.update(seq - last)
                    count, last = count + 1, seq
        elif first is not None:
            for line, seq, _ in itertools.chain([first], events):
                handle.write(line)
                count, last = count + 1, seq
    finally:
        if not to_stdout:
            handle.close()
    if to_stdout:
        click.echo(f"exported {count} events", err=True)
        return None
    os.replace(partial, output)
    summary: dict[str, Any] = {"exported": count, "last_seq": last, "file": str(output)}
    if not verify_after:
        click.echo(f"verify offline with: signer audit verify {output}", err=True)
        return summary
    from signer.audit import verify_chain

    with open(output, encoding="utf-8") as written:
        records = [json.loads(line) for line in written if line.strip()]
    start = {"first_seq": after + 1, "prev_hash": records[0]["prev_hash"]} if after and records else {}
    result = verify_chain(records, **start)
    summary["verified"] = result.ok
    if not result.ok:
        summary.update(first_bad_seq=result.first_bad_seq, reason=result.reason)
        return Outcome(summary, EXIT_FAILED)
    return summary


# -- approvals -------------------------------------------------------------------------------------


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
    """Fetch the signature of an approved request (once), or its state."""
    return client.approval_result(approval_id, wait=wait)


@approvals.command("register-key")
@click.option("--ed25519-key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@api_call()
def approvals_register_key(client: SignerClient, key_file: Path) -> Any:
    """Register the public half of your Ed25519 key for signed approvals."""
    key = load_ed25519_private_key(key_file.read_bytes())
    if key is None:
        raise click.BadParameter("--ed25519-key must hold an Ed25519 private key (PEM)")
    return client.register_approver_key("ed25519", key.public_key().public_bytes_raw().hex())


@groups.command("set-webhook")
@click.argument("group")
@click.argument("url")
@api_call()
def groups_set_webhook(client: SignerClient, group: str, url: str) -> Any:
    """Call URL on the group's new pending requests and outcomes (prints the HMAC key once)."""
    return client.set_group_webhook(group, url)


@groups.command("rotate-webhook-secret")
@click.argument("group")
@click.option(
    "--overlap",
    "overlap_seconds",
    type=click.IntRange(0, 30 * 24 * 3600),
    default=None,
    help="Seconds the previous secret's signature is still sent [default: the server's setting].",
)
@api_call()
def groups_rotate_webhook_secret(client: SignerClient, group: str, overlap_seconds: int | None) -> Any:
    """New HMAC key for the group's webhook (printed once); both signatures are sent during the overlap."""
    return client.rotate_group_webhook_secret(group, overlap_seconds)


@groups.command("delete-webhook")
@click.argument("group")
@api_call()
def groups_delete_webhook(client: SignerClient, group: str) -> Any:
    """Stop calling the group's webhook."""
    return client.delete_group_webhook(group)


GROUPS: tuple[click.Command, ...] = (
    whoami,
    status,
    metrics,
    openapi,
    auth,
    principals,
    tokens,
    keys,
    grants,
    sign,
    groups,
    policies,
    approvals,
)
AUDIT_COMMANDS: tuple[click.Command, ...] = (audit_events, audit_export)
