"""The ``signer`` command: set up a data directory, serve the API, migrate, verify an audit export.

``signer init`` is idempotent: it writes the SoftHSM configuration, generates the PINs into 0600 files
(or takes them from ``SIGNER_HSM_PIN`` / ``SIGNER_HSM_SO_PIN``), initialises the token in a separate process
(PINs travel on stdin, never argv), creates the token HMAC key, migrates the database and, the first time
only, creates the first admin and prints its credentials once. ``signer serve --workers N`` starts N
processes that each open the HSM after they start (spawned, never forked) and accept from one socket the
supervisor bound; a worker that dies is replaced with back-off, and only a crash loop stops the service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from signer import cli_api
from signer.cli_api import EXIT_CODES_HELP, EXIT_CONFIG, EXIT_FAILED
from signer.cli_api.common import write_private_json
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
@click.option(
    "--credentials-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the admin's credentials to this 0600 file (usable as --token-file) instead of printing them.",
)
@click.option(
    "--new-admin-credentials",
    is_flag=True,
    help="Recovery: issue new credentials for the existing admin --admin-name (the first printout was lost).",
)
def init(
    data_dir: str | None,
    config: str | None,
    admin_name: str,
    credentials_out: Path | None,
    new_admin_credentials: bool,
) -> None:
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
    credentials = asyncio.run(_bootstrap_admin(settings, admin_name, recover=new_admin_credentials))
    if credentials is None:
        if new_admin_credentials:
            _fail(f"no enabled admin named {admin_name!r}; nothing issued")
        click.echo(
            "an admin already exists; no new credentials printed "
            "(lost them? `signer init --new-admin-credentials --credentials-out FILE`)",
            err=True,
        )
        return
    what = "new admin credentials issued" if new_admin_credentials else "first admin created"
    if credentials_out is not None:
        try:
            write_private_json(credentials_out, credentials["credentials"])
        except OSError as exc:
            click.echo(f"cannot write {credentials_out} ({exc.strerror}); printing them instead", err=True)
        else:
            click.echo(f"{what}; credentials written to {credentials_out} (0600)", err=True)
            return
    click.echo(f"{what}; these credentials are shown once, keep them safe:", err=True)
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


async def _bootstrap_admin(settings: Settings, admin_name: str, *, recover: bool) -> dict[str, Any] | None:
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
        if recover:
            return await admin.recover_admin(admin_name)
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
    # The port is bound first, before the HSM or the database is touched: a port already taken is
    # refused at once, by whatever holds it (see _listen).
    try:
        sockets = _listen(settings.host, settings.port)
    except OSError as exc:
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
        raise  # unreachable
    try:
        if settings.workers == 1:
            sys.exit(run_worker(settings, sockets=sockets))
        sys.exit(_supervise(settings, sockets))
    finally:
        for sock in sockets:
            sock.close()


def run_worker(
    settings: Settings,
    *,
    sockets: list[socket.socket] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """One serving process: opens its own HSM session after it starts."""
    from signer.app import run
    from signer.logs import configure_logging

    configure_logging()
    try:
        run(settings, sockets=sockets, on_ready=on_ready)
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


def _worker_entry(settings: Settings, sockets: list[socket.socket], ready: Any) -> None:
    sys.exit(run_worker(settings, sockets=sockets, on_ready=ready.set))


# A worker that dies while the service runs is replaced after a back-off: RESTART_BACKOFF_FIRST seconds
# after its slot's first death within CRASH_LOOP_WINDOW, doubling with each further one, at most
# RESTART_BACKOFF_MAX. CRASH_LOOP_DEATHS deaths (of any workers) within CRASH_LOOP_WINDOW seconds is a
# crash loop: restarting would only hide it, so the service stops with an error.
RESTART_BACKOFF_FIRST = 0.5
RESTART_BACKOFF_MAX = 10.0
CRASH_LOOP_DEATHS = 5
CRASH_LOOP_WINDOW = 60.0
# Connections wait here while every worker is busy or one is being replaced.
LISTEN_BACKLOG = 1024


def _listen(host: str, port: int) -> list[socket.socket]:
    """Bind the service's port once, in the supervisor, for its workers to inherit.

    Not SO_REUSEPORT: the kernel lets any process of the same user join a reuse-port group, so an
    unrelated second instance would bind "successfully" and take a share of the connections. One socket
    bound without it makes a second instance fail with EADDRINUSE, and the workers all accept from the
    same queue, where an idle worker takes the next connection (not a hash that may pick a busy one) and
    connections wait, instead of being reset, while a dead worker is replaced.
    """
    addresses = dict.fromkeys(
        (family, address)
        for family, _, _, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    )
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; never two listeners
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _exit_status(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class _Supervisor:
    """Starts the workers, replaces the ones that die, stops them all on SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, sockets: list[socket.socket]) -> None:
        # Spawn, not fork: a child must never inherit a PKCS#11 handle from its parent.
        self._context = multiprocessing.get_context("spawn")
        self._settings = settings
        self._sockets = sockets
        self._log = logging.getLogger("signer.supervisor")
        self._workers: dict[int, tuple[Any, Any]] = {}  # slot -> (process, ready event)
        self._restarts: dict[int, float] = {}  # slot -> monotonic time to start its replacement
        self._deaths: deque[tuple[float, int]] = deque()  # (monotonic time, slot) within the window
        self._ever_ready = False
        self.stopping = False

    def _start(self, slot: int) -> None:
        ready = self._context.Event()
        process = self._context.Process(
            target=_worker_entry, args=(self._settings, self._sockets, ready), daemon=False
        )
        process.start()
        self._workers[slot] = (process, ready)

    def stop(self, _signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        self.stopping = True
        self._restarts.clear()
        for process, _ in self._workers.values():
            if process.is_alive():
                process.terminate()

    def run(self) -> int:
        from multiprocessing.connection import wait

        from signer.metrics import forget_worker

        for slot in range(self._settings.workers):
            if not self.stopping:
                self._start(slot)
        if self.stopping:  # a signal during start-up: stop what did start
            self.stop()
        status = 0
        while self._workers or self._restarts:
            now = time.monotonic()
            for slot, when in list(self._restarts.items()):
                # pop, not del: a stop() from a signal handler may have emptied the schedule meanwhile.
                if when <= now and self._restarts.pop(slot, None) is not None and not self.stopping:
                    self._start(slot)
                    if self.stopping:  # stopped while this one was starting: it stops too
                        self._workers[slot][0].terminate()
                    self._log.info("worker replaced", extra={"slot": slot, "pid": self._workers[slot][0].pid})
            pending = list(self._restarts.values())
            timeout = max(0.0, min(pending) - now) if pending else None
            sentinels = {process.sentinel: slot for slot, (process, _) in self._workers.items()}
            ready = wait(list(sentinels), timeout)
            self._ever_ready = self._ever_ready or any(e.is_set() for _, e in self._workers.values())
            for sentinel in ready:
                slot = sentinels[sentinel]
                process, _ = self._workers.pop(slot)
                process.join()
                forget_worker(process.pid)
                if self.stopping:
                    continue
                failure = self._died(slot, process)
                if failure is not None:
                    status = failure
                    self.stop()
        return status

    def _died(self, slot: int, process: Any) -> int | None:
        """A worker exited while the service runs: schedule its replacement, or say why not."""
        exitcode = process.exitcode
        how = _exit_status(exitcode)
        if not self._ever_ready:
            # No worker ever became ready: the configuration is wrong, and every replacement would
            # fail the same way. The worker has already said why.
            self._log.error("worker failed to start; stopping", extra={"pid": process.pid, "status": how})
            return exitcode if exitcode and exitcode > 0 else EXIT_FAILED
        now = time.monotonic()
        self._deaths.append((now, slot))
        while self._deaths and self._deaths[0][0] < now - CRASH_LOOP_WINDOW:
            self._deaths.popleft()
        if len(self._deaths) >= CRASH_LOOP_DEATHS:
            message = (
                f"workers died {len(self._deaths)} times within {CRASH_LOOP_WINDOW:g} s "
                f"(last: pid {process.pid}, {how}); stopping the service"
            )
            self._log.error(
                "workers are crash-looping; stopping the service",
                extra={"pid": process.pid, "status": how, "deaths": len(self._deaths)},
            )
            click.echo(f"signer: error: {message}", err=True)
            return EXIT_FAILED
        recent = sum(1 for _, s in self._deaths if s == slot)
        delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_FIRST * 2 ** (recent - 1))
        self._restarts[slot] = now + delay
        self._log.error(
            "worker died; replacing it",
            extra={"pid": process.pid, "status": how, "exit_code": exitcode, "restart_in_s": delay},
        )
        return None


def _supervise(settings: Settings, sockets: list[socket.socket]) -> int:
    from signer.logs import configure_logging
    from signer.metrics import prepare_multiprocess

    configure_logging()
    # The workers' metrics are summed across processes (any one answers a scrape): see signer.metrics.
    prepare_multiprocess(settings.data_dir)
    supervisor = _Supervisor(settings, sockets)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run()


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
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="An audit verifier key you hold (<name>+<id>+<key>, from `signer audit public-key`), or a file "
    "holding one; repeat for several. The first key is enough: rotations are followed from the log.",
)
@click.option(
    "--keyring",
    "keyring",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file of verifier keys you hold, one per line ('#' starts a comment).",
)
@click.option(
    "--checkpoint",
    "held_checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint note you hold from earlier: the export must extend it (needs --public-key).",
)
@click.option(
    "--require-anchored",
    is_flag=True,
    help="Fail when any event is covered by no signed checkpoint in the export (an unanchored tail).",
)
def audit_verify(
    export_file: Any,
    public_keys: tuple[str, ...],
    keyring: Path | None,
    held_checkpoint: Path | None,
    require_anchored: bool,
) -> None:
    """Verify an exported JSONL audit log offline: the chain, every signed checkpoint in it (each with the
    audit key in force at its position, following key rotations the previous key signed), consistency
    with a checkpoint you hold, and signed approvals. Names the first broken event; one summary line per
    range on stderr; exit 1 on any failure (and with --require-anchored, on an unanchored tail), 2 on
    bad options."""
    from signer.audit_note import NoteError, VerifierKey, open_checkpoint
    from signer.audit_verify import ExportVerifier
    from signer.crypto.signatures import check_ed25519

    keys: list[VerifierKey] = []
    held = None
    try:
        for given in public_keys:
            text = Path(given).read_text(encoding="utf-8") if Path(given).is_file() else given
            keys.append(VerifierKey.parse(text))
        if keyring is not None:
            for line in keyring.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(VerifierKey.parse(line))
        if held_checkpoint is not None:
            if not keys:
                _fail("--checkpoint needs --public-key", code=2)
            note = held_checkpoint.read_text(encoding="utf-8")
            for key in keys:
                try:
                    held = open_checkpoint(note, key, check_ed25519)
                    break
                except NoteError as exc:
                    last_error = exc
            if held is None:
                raise last_error
    except NoteError as exc:
        _fail(f"{exc.code}: {exc}", code=2)
    if require_anchored and not keys:
        _fail("--require-anchored needs --public-key", code=2)
    verifier = ExportVerifier(
        keys=keys,
        check=check_ed25519,
        held=held,
        approval_check=_approval_check,
        require_anchored=require_anchored,
    )
    for line in export_file:
        if not verifier.feed(line):
            break
    report = verifier.finish()
    for summary in report["ranges"]:
        click.echo(summary, err=True)
    click.echo(json.dumps(report))
    if not report["ok"]:
        sys.exit(1)


def _approval_check(
    scheme: str, public_key: str, approval_id: str, decision: str, digest: str, sig: str
) -> None:
    from datetime import UTC, datetime

    from signer.services.approvals import verify_approval_signature
    from signer.store.records import ApproverKeyRecord

    record = ApproverKeyRecord("offline", scheme, public_key, datetime.now(UTC))
    verify_approval_signature(record, approval_id, decision, digest, sig)


if __name__ == "__main__":
    main(prog_name="signer")
