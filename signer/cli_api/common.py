"""What every ``signer`` API command shares: exit codes, rendering, and ``api_call``.

``api_call`` turns ``fn(client, **params) -> answer`` into a click command with the connection options
(``--server``, ``--token-file``, ``--ca-file``, ``--client-config``, ``--json``), renders tables or JSON,
and maps errors to the ``EXIT_*`` codes. The token never comes from argv (argv is visible in ``ps``).
Must never import server internals: this package talks to a server through ``signer.client`` only.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from signer.client import ApiError, ClientConfigError, ClientConnectionError, SignerClient, load_client_config

EXIT_OK = 0
EXIT_FAILED = 1  # server error, unreachable server, unexpected answer
EXIT_USAGE = 2  # click's own: bad flags or arguments, unreadable input files
EXIT_CONFIG = 3  # local configuration invalid (server settings or client settings)
EXIT_DENIED = 4  # 401 unauthenticated, 403 forbidden / policy denied
EXIT_NOT_FOUND = 5  # 404 (a key you hold no grant on looks exactly like a missing one)
EXIT_INVALID = 6  # 400, 405, 413, 415, 422: the request itself is wrong
EXIT_CONFLICT = 7  # 409, e.g. key_disabled, invalid_key_transition
EXIT_RATE_LIMITED = 8  # 429
EXIT_UNAVAILABLE = 9  # 503, 504: HSM, database or audit unavailable, deadline exceeded
EXIT_PENDING = 10  # 202: nothing signed yet, the request waits for approvers (the answer names the approval)

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
  10 pending approval (202: nothing signed yet; the answer names the approval)
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


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns with a header; the last column is not padded."""
    table = [[c.upper() for c in columns], *[[cell(row.get(c)) for c in columns] for row in rows]]
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
                flat.append((name, cell(value)))

    walk(record, prefix)
    width = max((len(name) for name, _ in flat), default=0)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in flat)


def pending_or_done(answer: Any, then: str | None = None) -> Any:
    """A sign answer: one that waits for approval exits ``EXIT_PENDING`` (a script must not take it for a
    signature), after printing it and where to wait. ``then`` (with ``{id}`` for the approval's id)
    replaces the hint for operations completed by their requester (a key transition)."""
    if isinstance(answer, Mapping) and answer.get("state") == "pending_approval":
        approval = answer.get("approval")
        approval_id = approval.get("id", "?") if isinstance(approval, Mapping) else "?"
        hint = (
            f"nothing signed yet; wait with `signer approvals result {approval_id} --wait 60`"
            if then is None
            else then.format(id=approval_id)
        )
        click.echo(f"signer: pending approval: {hint}", err=True)
        return Outcome(answer, EXIT_PENDING)
    return answer


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
        click.echo(f"  reason: {cell(reason)}", err=True)
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


def progress_wanted(stream: TextIO | None = None) -> bool:
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


def credentials_out_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--credentials-out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=_writable_dir,
        help="Write the new credentials to this 0600 file (usable as --token-file) instead of printing them.",
    )(fn)


def store_credentials(result: Any, credentials: Any, out: Path | None) -> Any:
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
    secret_names = ("access_token", "refresh_token", "secret_access_key")
    return {k: v for k, v in credentials.items() if k not in secret_names}


def read_input(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None


def read_json_object(path: str) -> dict[str, Any]:
    text = read_input(path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a JSON object")
    return data
