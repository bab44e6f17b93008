"""The ``signer`` command: set up a data directory, serve the API, migrate, verify an audit export.

``signer init`` is idempotent: it writes the SoftHSM configuration, generates the PINs into 0600 files
(or takes them from ``SIGNER_HSM_PIN`` / ``SIGNER_HSM_SO_PIN``), initialises the token in a separate process
(PINs travel on stdin, never argv), creates the token HMAC key, migrates the database and, the first time
only, creates the first admin and prints its credentials once. ``signer serve --workers N`` starts N
processes that each open the HSM after they start (spawned, never forked) and share the port.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from signer import cli_api
from signer.cli_api import EXIT_CODES_HELP, EXIT_CONFIG
from signer.config import (
    Secret,
    Settings,
    describe_settings,
    ignored_variables,
    load_settings,
    load_settings_with_sources,
)
from signer.errors import ConfigurationError, SignerError


def _fail(message: str, code: int = EXIT_CONFIG) -> None:
    click.echo(f"signer: error: {message}", err=True)
    sys.exit(code)


def _settings(data_dir: str | None, config: str | None, **overrides: Any) -> Settings:
    try:
        return load_settings(
            Path(config) if config else None,
            data_dir=Path(data_dir) if data_dir else None,
            **overrides,
        )
    except ConfigurationError as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers calm


class _Steps:
    """Progress lines (``[2/5] PINs``) on stderr for a long operation, only when stderr is a terminal."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr

    def __call__(self, label: str) -> None:
        self.done += 1
        if getattr(self.stream, "isatty", lambda: False)():
            click.echo(f"[{self.done}/{self.total}] {label}", file=self.stream)


def _write_private(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically; an existing file is kept (init is idempotent)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _ensure_secret_file(path: Path, env_name: str, make: Any) -> Secret:
    if path.exists():
        return Secret(path.read_text(encoding="utf-8").strip())
    value = os.environ.get(env_name) or make()
    _write_private(path, value.encode("utf-8"))
    return Secret(value)


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(package_name="signer")
def main() -> None:
    """Self-hosted transaction signer: keys inside a PKCS#11 HSM, every decision audited.

    Local commands (init, serve, migrate, config, audit verify) work on this machine's data directory;
    the others talk to a running server (--server, --token-file; see `signer keys list --help`).
    Shell completion: eval "$(_SIGNER_COMPLETE=bash_source signer)" (zsh_source, fish_source).
    """


for _command in cli_api.GROUPS:
    main.add_command(_command)


_data_dir_option = click.option("--data-dir", envvar="SIGNER_DATA_DIR", help="Local state directory.")
_config_option = click.option("--config", envvar="SIGNER_CONFIG", help="TOML settings file.")


@main.command()
@_data_dir_option
@_config_option
@click.option("--admin-name", default="admin", show_default=True, help="Name of the first admin.")
def init(data_dir: str | None, config: str | None, admin_name: str) -> None:
    """Prepare the data directory, token and database; print the first admin's credentials once."""
    settings = _settings(data_dir, config)
    step = _Steps(5)
    step("data directory")
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.data_dir, 0o700)

    if "softhsm" in settings.hsm_module:
        conf = Path(os.environ.get("SOFTHSM2_CONF") or settings.resolved_softhsm_conf)
        if not conf.exists():
            from signer.hsm.provision import write_softhsm_conf

            write_softhsm_conf(conf, settings.data_dir / "tokens")
            click.echo(f"wrote SoftHSM configuration {conf}", err=True)
        os.environ["SOFTHSM2_CONF"] = str(conf)

    step("PINs")
    user_pin = settings.hsm_pin or _ensure_secret_file(
        settings.resolved_pin_file, "SIGNER_HSM_PIN", lambda: secrets.token_urlsafe(24)
    )
    so_pin = _ensure_secret_file(
        settings.data_dir / "hsm-so-pin", "SIGNER_HSM_SO_PIN", lambda: secrets.token_urlsafe(24)
    )
    step(f"token '{settings.hsm_token_label}' (initialising a new token takes a few seconds)")
    created = _provision_token(settings, so_pin, user_pin)
    click.echo(
        f"token '{settings.hsm_token_label}' " + ("initialised" if created else "already present"), err=True
    )

    key_file = settings.resolved_token_key_file
    if not key_file.exists():
        _write_private(key_file, secrets.token_bytes(32))

    from signer.store import migrate

    step("database schema")
    try:
        migrate(settings.resolved_database_url)
    except SignerError as exc:
        _fail(f"database migration failed: {exc.message}")
    except ConfigurationError as exc:
        _fail(str(exc))
    step("first admin")
    credentials = asyncio.run(_bootstrap_admin(settings, admin_name))
    if credentials is None:
        click.echo("an admin already exists; no new credentials printed", err=True)
        return
    click.echo("first admin created; these credentials are shown once, keep them safe:", err=True)
    click.echo(json.dumps(credentials, indent=2))


def _provision_token(settings: Settings, so_pin: Secret, user_pin: Secret) -> bool:
    """Initialise the token in a fresh process: python-pkcs11 must not be loaded where C_InitToken runs."""
    payload = json.dumps(
        {
            "module": settings.hsm_module,
            "label": settings.hsm_token_label,
            "so_pin": so_pin.reveal(),
            "user_pin": user_pin.reveal(),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "signer.hsm.provision"],
        input=payload,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
        timeout=120,
    )
    if done.returncode not in (0, 10):
        _fail(f"token initialisation failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.returncode == 0


async def _bootstrap_admin(settings: Settings, admin_name: str) -> dict[str, Any] | None:
    from signer.identity import Role
    from signer.services.admin import AdminService
    from signer.services.auth import AuthService
    from signer.services.facts import FactsCache
    from signer.store import open_store

    store = await open_store(settings.resolved_database_url)
    try:
        auth = AuthService(
            store,
            FactsCache(),
            settings.token_key(),
            access_ttl=settings.access_token_ttl_seconds,
            refresh_ttl=settings.refresh_token_ttl_seconds,
        )
        admin = AdminService(store, auth)
        if await admin.has_admin():
            return None
        return await admin.create_principal(None, admin_name, Role.ADMIN)
    finally:
        await store.close()


@main.command()
@_data_dir_option
@_config_option
def migrate(data_dir: str | None, config: str | None) -> None:
    """Bring the database schema up to date."""
    from signer.store import migrate as run_migrations

    settings = _settings(data_dir, config)
    try:
        run_migrations(settings.resolved_database_url)
    except SignerError as exc:
        _fail(f"database migration failed: {exc.message}")
    except ConfigurationError as exc:
        _fail(str(exc))
    click.echo("database is up to date", err=True)


@main.command()
@_data_dir_option
@_config_option
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--workers", type=int, default=None, help="Worker processes, each with its own HSM session.")
def serve(
    data_dir: str | None, config: str | None, host: str | None, port: int | None, workers: int | None
) -> None:
    """Serve the API."""
    settings = _settings(data_dir, config, host=host, port=port, workers=workers)
    # No migration here: a mistyped URL must not start a service on a new, empty database.
    # `signer init` (first run) and `signer migrate` (upgrades) create and update the schema.
    if settings.workers == 1:
        sys.exit(run_worker(settings))
    sys.exit(_supervise(settings))


def run_worker(settings: Settings) -> int:
    """One serving process: opens its own HSM session after it starts."""
    from signer.app import run
    from signer.logs import configure_logging

    configure_logging()
    try:
        run(settings)
    except ConfigurationError as exc:
        click.echo(f"signer: error: {exc}", err=True)
        return EXIT_CONFIG
    except SignerError as exc:
        # e.g. the database is unreachable at start: refuse, with the stable code.
        click.echo(f"signer: error: cannot start: {exc.code}: {exc.message}", err=True)
        return EXIT_CONFIG
    except OSError as exc:
        click.echo(
            f"signer: error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", err=True
        )
        return EXIT_CONFIG
    return 0


def _worker_entry(settings: Settings) -> None:
    sys.exit(run_worker(settings))


def _supervise(settings: Settings) -> int:
    from signer.metrics import prepare_multiprocess

    # The workers' metrics are summed across processes (any one answers a scrape): see signer.metrics.
    prepare_multiprocess(settings.data_dir)
    # Spawn, not fork: a child must never inherit a PKCS#11 handle from its parent.
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_worker_entry, args=(settings,), daemon=False) for _ in range(settings.workers)
    ]
    for child in children:
        child.start()
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    from multiprocessing.connection import wait

    alive = list(children)
    while alive:
        ready = wait([c.sentinel for c in alive])
        for child in [c for c in alive if c.sentinel in ready]:
            alive.remove(child)
            if child.exitcode not in (0, -signal.SIGTERM) and not stopping:
                # One worker failing to start means the configuration is wrong: stop them all.
                status = child.exitcode if child.exitcode and child.exitcode > 0 else 1
                stop(signal.SIGTERM, None)
    return status


@main.group()
def config() -> None:
    """Inspect the server's configuration."""


@config.command("show")
@_data_dir_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_show(ctx: click.Context, data_dir: str | None, config: str | None, as_json: bool) -> None:
    """Print the effective configuration (file, then SIGNER_* environment), each value with its source.

    Secrets are never printed, not even in part: a PIN shows as "set" with where it came from.
    """
    from click.core import ParameterSource

    # Values that click took from the environment are reported as env by the loader itself.
    explicit_dir = data_dir if ctx.get_parameter_source("data_dir") is ParameterSource.COMMANDLINE else None
    explicit_file = config if ctx.get_parameter_source("config") is ParameterSource.COMMANDLINE else None
    try:
        loaded = load_settings_with_sources(
            Path(explicit_file) if explicit_file else None,
            data_dir=Path(explicit_dir) if explicit_dir else None,
        )
    except ConfigurationError as exc:
        _fail(str(exc))
        raise
    rows = describe_settings(loaded)
    ignored = ignored_variables()
    for name in ignored:
        click.echo(f"signer: warning: {name} matches no setting and is ignored", err=True)
    if as_json:
        document = {
            "config_file": str(loaded.config_file) if loaded.config_file else None,
            "settings": {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in rows},
            "ignored_environment": ignored,
        }
        click.echo(json.dumps(document, indent=2))
        return
    for row in rows:
        if row["secret"]:
            where = f"{row['source']} {row['origin']}" if row["origin"] else row["source"]
            row["value"] = f"set ({where})" if row["value"] else "not set"
        elif not isinstance(row["value"], str):
            row["value"] = json.dumps(row["value"])
        origin = row["origin"]
        if origin:
            row["source"] += f" ({origin})" if origin.startswith("derived") else f" {origin}"
    click.echo(cli_api.render_table(rows, ("name", "value", "source")))


@main.group()
def audit() -> None:
    """Audit log tools: read events from a server, export them, verify an export offline."""


for _command in cli_api.AUDIT_COMMANDS:
    audit.add_command(_command)


@audit.command("verify")
@click.argument("export_file", type=click.File("r", encoding="utf-8"))
def audit_verify(export_file: Any) -> None:
    """Verify an exported JSONL audit log offline; names the first broken event."""
    from signer.audit import verify_chain

    records = []
    for number, line in enumerate(export_file, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            _fail(f"line {number} is not JSON", code=1)
    result = verify_chain(records)
    if result.ok:
        click.echo(json.dumps({"ok": True, "checked": result.checked}))
        return
    click.echo(
        json.dumps(
            {
                "ok": False,
                "checked": result.checked,
                "first_bad_seq": result.first_bad_seq,
                "reason": result.reason,
            }
        )
    )
    sys.exit(1)


if __name__ == "__main__":
    main(prog_name="signer")
