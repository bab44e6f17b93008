"""F-06 at server level: the database is gone when a sign request arrives, then comes back.

PostgreSQL: the database stops accepting connections (``ALTER DATABASE ... ALLOW_CONNECTIONS false``)
and every connection the server holds is terminated. SQLite (in a directory of its own, so the token
is unaffected): the directory is moved away, or made mode 000 (as root the server then runs under
``setpriv`` without CAP_DAC_OVERRIDE, or the mode would mean nothing to it).

Fail closed (I1): while the database is away a sign request gets 503 ``db_unavailable`` or
``audit_unavailable`` and NO signature, even when the token, key and grant are all in the server's facts
cache (so the HSM did sign: the signature must be dropped, not released unaudited); a token the server
has never seen is 503 too, not 401; ``/readyz`` says the database is down. Once it is back, signing works
without a restart, nothing was recorded as allowed for the refused requests, and the chain verifies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy.engine import make_url

from tests import service_harness
from tests.dbfixtures import pg_execute, run_sync
from tests.service_harness import Installation, Server, grant, init_installation, make_key, make_service
from tests.system.support import (
    TcpProxy,
    cli_audit_verify,
    export_audit,
    sign_outcomes,
    wait_until,
    without_dac_override,
)

DOWN_CODES = {"db_unavailable", "audit_unavailable"}
LEAKS = ("Traceback", "sqlalchemy", "sqlite", "asyncpg", "SELECT", "INSERT", "postgres", "signer.db")


def sign(server: Server, token: str, key: dict, request_id: str) -> tuple[int, dict]:
    status, _, body = server.call(
        "POST",
        f"/v1/keys/{key['id']}/sign/message",
        {"message": request_id, "encoding": "utf8"},
        token,
        headers={"X-Request-Id": request_id},
    )
    return status, body


def outage(
    server: Server,
    installation: Installation,
    tmp_path: Path,
    take: Callable[[], None],
    give: Callable[[], None],
) -> None:
    pid = server.process.pid
    relayer = make_service(server, "db-down")
    token = relayer["credentials"]["access_token"]
    second = make_service(server, "never-seen")
    stranger = second["credentials"]["access_token"]  # granted, but never used: nothing of it cached
    key = make_key(server, "secp256k1", "db-down")
    for principal in (relayer, second):
        grant(server, principal["principal"]["id"], key["id"], ["sign_message"])
    status, body = sign(server, token, key, "warm")  # token, key and grant now in the facts cache
    assert status == 200, json.dumps(body)

    take()
    try:
        for request_id, who in (("down-cached", token), ("down-stranger", stranger)):
            status, body = sign(server, who, key, request_id)
            assert status == 503 and body["code"] in DOWN_CODES, (request_id, json.dumps(body))
            assert not {"signature", "r", "s", "v"} & set(body), "a signature left without its audit record"
            text = json.dumps(body)
            for leak in (*LEAKS, str(tmp_path)):
                assert leak not in text, leak
        status, _, ready = server.call("GET", "/readyz")
        assert status == 503 and ready["checks"] == {"hsm": "up", "database": "down"}, ready
        assert server.call("GET", "/healthz")[0] == 200
    finally:
        give()

    attempts = iter(range(10_000))

    def signs_again() -> bool:
        request_id = f"back-{next(attempts)}"
        status, body = sign(server, token, key, request_id)
        if status == 200:
            signature = bytes.fromhex(body["signature"][2:])
            signable = encode_defunct(text=request_id)
            assert Account.recover_message(signable, signature=signature) == key["address"]
            return True
        assert status == 503 and body["code"] in DOWN_CODES, json.dumps(body)
        return False

    wait_until(signs_again, 30, "signing to work again", interval=0.2)
    assert server.process.poll() is None and server.process.pid == pid  # recovered without a restart
    assert server.call("GET", "/readyz")[0] == 200

    lines = export_audit(server)
    recorded = sign_outcomes(lines)
    for request_id in ("down-cached", "down-stranger"):
        assert "allowed" not in recorded.get(request_id, [])
    code, report = cli_audit_verify(lines, tmp_path, installation.env)
    assert code == 0 and report["ok"], report


def test_postgres_host_gone_fails_closed_then_recovers(tmp_path: Path, pg_url: str, launch) -> None:
    """The server reaches PostgreSQL through a proxy that we take down: refused connects, reset sockets."""
    target = make_url(pg_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        via_proxy = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        installation = init_installation(tmp_path / "data", via_proxy)
        server = launch(installation)
        try:
            outage(server, installation, tmp_path, proxy.down, proxy.up)
        finally:
            server.stop()  # before the proxy's thread goes


def test_postgres_refusing_connections_fails_closed_then_recovers(
    tmp_path: Path, pg_url: str, pg_admin_url: str, launch
) -> None:
    """ALTER DATABASE ... ALLOW_CONNECTIONS false, then every connection of the server terminated."""
    installation = init_installation(tmp_path / "data", pg_url)
    server = launch(installation)
    name = make_url(pg_url).database

    def take() -> None:
        run_sync(
            lambda: pg_execute(
                pg_admin_url,
                f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            )
        )

    def give() -> None:
        run_sync(lambda: pg_execute(pg_admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    outage(server, installation, tmp_path, take, give)


@pytest.mark.parametrize("mode", ["move", "chmod"])
def test_sqlite_directory_unusable_fails_closed_then_recovers(
    tmp_path: Path, launch, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    if mode == "chmod":
        prefix = without_dac_override()
        if prefix is None:
            pytest.skip("running as root without setpriv: mode 000 would not keep the server out")
        monkeypatch.setattr(service_harness, "SIGNER", [*prefix, *service_harness.SIGNER])
    db_dir = tmp_path / "db"
    db_dir.mkdir(mode=0o700)
    installation = init_installation(tmp_path / "data", f"sqlite+aiosqlite:///{db_dir / 'signer.db'}")
    server = launch(installation)
    away = tmp_path / "db.away"

    def take() -> None:
        if mode == "move":
            db_dir.rename(away)
        else:
            db_dir.chmod(0)

    def give() -> None:
        if mode == "move":
            away.rename(db_dir)
        else:
            db_dir.chmod(0o700)

    outage(server, installation, tmp_path, take, give)
