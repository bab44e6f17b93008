"""Secrets into environments and from files: ``signer exec``, ``secrets env``, ``secrets import``.

``exec`` and ``env`` resolve references (``signer.secret_refs``: ``secret://folder/name[@V][#FIELD]``,
``sec_ID[@V][#FIELD]``, or a name alone, looked up from ``--workspace`` or ``--scope`` upward) and, with
``--scope``, every secret under it the caller may list and read, in one ``POST /v1/secrets/resolve``
(all or nothing). ``VAR=REF`` sets VAR to one field; a bare REF, and each secret of the scope, sets every
field as ``NAME_FIELD`` (``signer.cli_api.envfiles``). Invalid names and collisions are refused before
anything is printed or started. ``exec`` writes nothing to disk, passes SIGINT, SIGTERM, SIGHUP and
SIGQUIT on to the command and exits with its status (128+N when signal N ended it). With ``--watch`` it
polls again every ``--interval`` and restarts the command (or sends it ``--signal``) only when a value it
gave actually changed.

``import`` reads a ``.env`` or JSON file and creates one secret per record in ``--folder``, in order,
stopping at the first refusal; the report names each record's outcome (created, exists, failed, not
tried) and never a value, nor does any error about the file (line numbers and names only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from signer.cli_api.common import EXIT_OK, Outcome, Raw, api_call, exit_code_for_status
from signer.cli_api.envfiles import VARIABLE, EnvError, Variables, read_import, render, variable_name
from signer.cli_api.secrets import CATEGORIES, secrets
from signer.client import ApiError, ClientError, SignerClient
from signer.secret_refs import ReferenceRefused, SecretReference, parse_reference

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _specs(specs: tuple[str, ...], hint: str) -> list[tuple[str | None, SecretReference]]:
    """``VAR=REF`` or ``REF`` each; refused by position (a mistyped spec might hold a value)."""
    parsed: list[tuple[str | None, SecretReference]] = []
    for position, spec in enumerate(specs, start=1):
        var, sep, text = spec.partition("=")
        if not sep:
            var, text = "", spec
        try:
            ref = parse_reference(text)
        except ReferenceRefused as exc:
            raise click.BadParameter(f"reference {position}: {exc}", param_hint=hint) from None
        if sep and ref.field is None:
            raise click.BadParameter(
                f"reference {position}: VAR=REF sets one variable: name a field with #FIELD", param_hint=hint
            )
        if sep and not VARIABLE.match(var):
            raise click.BadParameter(
                f"reference {position}: {var!r} is not a valid environment variable name", param_hint=hint
            )
        parsed.append((var if sep else None, ref))
    return parsed


def collect(
    client: SignerClient,
    specs: tuple[str, ...],
    *,
    scope: str | None,
    workspace: str | None,
    workload: str | None,
    hint: str,
) -> dict[str, str]:
    """The variables ``specs`` and ``scope`` give, resolved in one call; refused before anything is used."""
    parsed = _specs(specs, hint)
    if not parsed and scope is None:
        raise click.UsageError(f"give {hint} references, --scope, or both")
    try:
        answer = client.resolve_secrets(
            [str(ref) for _, ref in parsed],
            workspace=workspace or scope,
            scope=scope,
            workload=workload,
        )
    except ApiError as exc:
        index = exc.problem.get("index")
        if isinstance(index, int):
            exc.detail = f"{exc.detail} (reference {index + 1})"
        elif exc.problem.get("scope"):
            exc.detail = f"{exc.detail} (a secret under --scope)"
        raise
    variables = Variables()
    try:
        for position, ((var, ref), got) in enumerate(zip(parsed, answer["references"], strict=True), 1):
            source = f"reference {position}"
            if var is not None:
                assert ref.field is not None
                variables.set(var, got["values"][ref.field], source)
                continue
            for field, value in got["values"].items():
                variables.set(variable_name(got["name"], field), value, source)
        for got in answer["scope"]:
            source = f"{got['folder']}/{got['name']}"
            for field, value in got["values"].items():
                variables.set(variable_name(got["name"], field), value, source)
    except EnvError as exc:
        raise click.UsageError(str(exc)) from None
    for skipped in answer.get("skipped", []):
        why = "it is disabled" if skipped.get("state") == "disabled" else "you may list it but not read it"
        click.echo(f"signer: skipped {skipped['folder']}/{skipped['name']}: {why}", err=True)
    return variables.values


@secrets.command("env")
@click.argument("refs", nargs=-1)
@click.option("--scope", default=None, help="Also every secret under this folder you may list and read.")
@click.option("--workspace", default=None, help="The folder names alone are looked up from [--scope].")
@click.option(
    "--format", "form", type=click.Choice(["dotenv", "json", "shell"]), default="dotenv", show_default=True
)
@click.option("--workload", default=None, help="Which workload reads them (written to the audit log).")
@api_call()
def secrets_env(
    client: SignerClient,
    refs: tuple[str, ...],
    scope: str | None,
    workspace: str | None,
    form: str,
    workload: str | None,
) -> Any:
    """Print secrets as environment variables: REF or VAR=REF, and/or --scope.

    REF: secret://FOLDER/NAME[@VERSION][#FIELD], sec_ID[@VERSION][#FIELD], or NAME[@VERSION][#FIELD]
    looked up from --workspace (or --scope) upward. ``shell`` (``export NAME='...'``) and ``dotenv`` are
    safe to ``source`` and read back exactly, multi-line values included; ``json`` is one object."""
    variables = collect(client, refs, scope=scope, workspace=workspace, workload=workload, hint="REF")
    try:
        return Raw(render(variables, form))
    except EnvError as exc:
        raise click.UsageError(str(exc)) from None


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--secret", "specs", multiple=True, help="VAR=REF or REF (repeatable).")
@click.option("--scope", default=None, help="Every secret under this folder you may list and read.")
@click.option("--workspace", default=None, help="The folder names alone are looked up from [--scope].")
@click.option("--workload", default=None, help="Which workload reads them (written to the audit log).")
@click.option("--watch", is_flag=True, help="Keep polling; act when a value actually changed.")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 86400),
    default=30.0,
    show_default=True,
    help="--watch: seconds between polls.",
)
@click.option(
    "--signal",
    "notify",
    type=click.Choice(["HUP", "USR1", "USR2", "TERM", "INT"]),
    default=None,
    help="--watch: send this signal instead of restarting (the command re-reads its secrets itself).",
)
@click.option("--restart", is_flag=True, help="--watch: restart the command with the new values [default].")
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    help="--restart: seconds between SIGTERM and SIGKILL.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@api_call()
def exec_command(
    client: SignerClient,
    specs: tuple[str, ...],
    scope: str | None,
    workspace: str | None,
    workload: str | None,
    watch: bool,
    interval: float,
    notify: str | None,
    restart: bool,
    grace: float,
    command: tuple[str, ...],
) -> Any:
    """Run COMMAND with secrets in its environment: signer exec --scope acme/app [--secret VAR=REF] -- CMD.

    Nothing is written to disk; SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to the command, and its
    exit status is ours (128+N when signal N ended it). REF: secret://FOLDER/NAME[@VERSION][#FIELD],
    sec_ID[@VERSION][#FIELD], or NAME[@VERSION][#FIELD] looked up from --workspace (or --scope) upward.

    --watch resolves again every --interval seconds and, only when a value it gave actually changed
    (not on every poll), restarts the command with the new values (--restart, the default) or sends it
    --signal. A failed poll is reported on stderr (never a value) and the command keeps running."""
    if notify is not None and restart:
        raise click.UsageError("give --signal or --restart, not both")
    if not watch and (notify is not None or restart):
        raise click.UsageError("--signal and --restart go with --watch")

    def resolve() -> dict[str, str]:
        return collect(client, specs, scope=scope, workspace=workspace, workload=workload, hint="--secret")

    variables = resolve()
    runner = _Child(command)
    runner.start(variables)
    previous = {sig: signal.signal(sig, lambda number, _: runner.forward(number)) for sig in _SIGNALS}
    try:
        while True:
            status = runner.wait(interval if watch else None)
            if status is not None:
                break
            try:
                fresh = resolve()
            except (ApiError, ClientError, click.UsageError) as exc:
                click.echo(f"signer: exec --watch: poll failed ({_poll_error(exc)}); still running", err=True)
                continue
            if fresh == variables:
                continue
            variables = fresh
            if notify is not None:
                click.echo(f"signer: exec --watch: a value changed; sending SIG{notify}", err=True)
                runner.forward(getattr(signal, f"SIG{notify}"))
            else:
                click.echo("signer: exec --watch: a value changed; restarting the command", err=True)
                status = runner.restart(variables, grace)
                if status is not None:
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(128 - status if status < 0 else status)


def _poll_error(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.code}"
    return type(exc).__name__


class _Child:
    """The command, started with given variables; restarted in place when they change. A signal the
    user sends us is passed on; a restart we start is not taken for the command ending on its own."""

    def __init__(self, command: tuple[str, ...]) -> None:
        self._command = list(command)
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def start(self, variables: dict[str, str]) -> None:
        try:
            self._process = subprocess.Popen(self._command, env={**os.environ, **variables})  # noqa: S603 - the caller's command
        except OSError as exc:
            raise click.UsageError(f"cannot start {self._command[0]!r}: {exc.strerror}") from None

    def forward(self, number: int) -> None:
        if self._process is not None and self._process.poll() is None:
            if number in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
                self._stopping = True
            self._process.send_signal(number)

    def wait(self, timeout: float | None) -> int | None:
        """The exit status, or None if it is still running after ``timeout`` seconds."""
        assert self._process is not None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def restart(self, variables: dict[str, str], grace: float) -> int | None:
        """Stop the command (SIGTERM, then SIGKILL after ``grace``) and start it again; the status
        instead when the user asked us to stop meanwhile (or the command had already ended)."""
        assert self._process is not None
        if self._process.poll() is not None:
            return self._process.returncode
        self._process.terminate()
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._stopping:
            return self._process.returncode
        self.start(variables)
        return None


@secrets.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--folder", required=True, help="The folder the secrets are created in.")
@click.option("--format", "form", type=click.Choice(["dotenv", "json"]), default=None, help="[by extension]")
@click.option(
    "--name",
    default=None,
    help="One secret with this name holding every key as a field (default: .env one secret per key, "
    "JSON an object of secret names to fields).",
)
@click.option("--owner-group", default=None, help="Owning group (or --owner-principal).")
@click.option("--owner-principal", default=None, help="Owning principal id (or --owner-group).")
@click.option("--description", default=None, help="What they are for.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--category", type=click.Choice(CATEGORIES), default=None, help="Category [other].")
@click.option(
    "--skip-existing", is_flag=True, help="A name the folder holds already is skipped, not a failure."
)
@api_call(columns=("name", "outcome", "id", "code"))
def secrets_import(
    client: SignerClient,
    file: Path,
    folder: str,
    form: str | None,
    name: str | None,
    owner_group: str | None,
    owner_principal: str | None,
    description: str | None,
    tags: tuple[str, ...],
    category: str | None,
    skip_existing: bool,
) -> Any:
    """Create secrets from a .env or JSON file, without printing any value.

    Every record is checked before the first is created; then they are created in order, stopping at the
    first refusal. The report gives each record's outcome: created, exists (--skip-existing), failed, or
    not_tried; a re-run with --skip-existing continues where a failed one stopped."""
    if (owner_group is None) == (owner_principal is None):
        raise click.UsageError("give --owner-group or --owner-principal")
    form = form or ("json" if file.suffix.lower() == ".json" else "dotenv")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise click.BadParameter(f"cannot read the file: {reason}", param_hint="FILE") from None
    try:
        records = read_import(text, form, name)
    except EnvError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from None
    report: list[dict[str, Any]] = []
    failed: ApiError | None = None
    for secret_name, fields in records.items():
        row: dict[str, Any] = {"name": secret_name, "outcome": "not_tried", "id": None, "code": None}
        report.append(row)
        if failed is not None:
            continue
        try:
            created = client.create_secret(
                folder,
                secret_name,
                owner_group=owner_group,
                owner_principal=owner_principal,
                fields=fields,
                description=description,
                tags=list(tags),
                category=category,
            )
        except ApiError as exc:
            row["code"] = exc.code
            if skip_existing and exc.code == "secret_exists":
                row["outcome"] = "exists"
                continue
            row["outcome"] = "failed"
            failed = exc
            continue
        row.update(outcome="created", id=created["id"])
    code = EXIT_OK if failed is None else exit_code_for_status(failed.status)
    return Outcome({"items": report, "next": None}, code)


# ``signer exec`` is a top-level command; ``env`` and ``import`` join the ``secrets`` group.
COMMANDS: tuple[click.Command, ...] = (exec_command,)
