"""Matrix F-13: ``kill -9`` while new versions and new secrets are being sealed and written.

A real server (SoftHSM token, SQLite file or PostgreSQL) takes a stream of set-value requests from
several clients at once, each wrapping a fresh data key in the token before writing its row, while a
fifth client creates new secrets; the server and its workers are killed with SIGKILL while requests
are in flight, at whatever step each one is. After a restart on the same data directory every version
the secret lists opens (fetched by number, with the value one of the clients sent), every version a
client was told about holds exactly the value that client sent, the versions run 1..current without a
gap, and the current version opens: no row with a data key that cannot be unwrapped, and nothing
half-written. Every new secret that is listed opens, and every acknowledged one is listed with its value.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, http, init_installation, start_server

CLIENTS = 4
ACKNOWLEDGED_BEFORE_KILL = 24


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


@pytest.fixture(params=["sqlite", "postgres"])
def installation_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    with ExitStack() as stack:
        url = stack.enter_context(private_pg_database("signer_f13")) if request.param == "postgres" else None
        yield tmp_path / "data", url


def test_kill_9_during_set_value_leaves_every_version_readable(
    installation_url: tuple[Path, str | None],
) -> None:
    data_dir, database_url = installation_url
    installation = init_installation(data_dir, database_url)
    admin = installation.admin_token
    admin_id = installation.admin["principal"]["id"]
    server = start_server(installation, workers=2)
    try:
        status, _, body = server.call(
            "POST",
            "/v1/grants",
            {
                "principal_id": admin_id,
                "scope": "f13",
                "operations": ["create", "update", "read_value", "read_metadata", "list"],
            },
            admin,
        )
        assert status == 201, body
        first = "v-" + secrets.token_hex(8)
        status, _, created = server.call(
            "POST",
            "/v1/secrets",
            {"folder": "f13/app", "name": "db", "owner_group": "dbas", "fields": {"password": first}},
            admin,
        )
        assert status == 201, created
        secret_id = created["id"]
        sent: set[str] = {first}
        acknowledged: dict[int, str] = {1: first}
        lock = threading.Lock()
        enough = threading.Event()
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                value = "v-" + secrets.token_hex(8)
                with lock:
                    sent.add(value)
                try:
                    status, _, body = http(
                        "POST",
                        f"{server.url}/v1/secrets/{secret_id}/versions",
                        {"fields": {"password": value}},
                        admin,
                        timeout=10,
                    )
                except OSError:
                    return  # the server is gone
                if status == 201:
                    with lock:
                        acknowledged[body["current_version"]] = value
                        if len(acknowledged) > ACKNOWLEDGED_BEFORE_KILL:
                            enough.set()
                else:
                    # Two clients raced for one version number: the loser is refused, nothing written.
                    assert (status, body.get("code")) in ((409, "secret_version_exists"),), body

        created: dict[str, str] = {}

        def creator() -> None:
            while not stop.is_set():
                value = "c-" + secrets.token_hex(8)
                try:
                    status, _, body = http(
                        "POST",
                        f"{server.url}/v1/secrets",
                        {
                            "folder": "f13/new",
                            "name": "n-" + secrets.token_hex(6),
                            "owner_group": "dbas",
                            "fields": {"password": value},
                        },
                        admin,
                        timeout=10,
                    )
                except OSError:
                    return
                assert status == 201, body
                with lock:
                    created[body["id"]] = value

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        threads.append(threading.Thread(target=creator))
        for thread in threads:
            thread.start()
        try:
            assert enough.wait(timeout=120), "the clients did not get enough versions written"
        finally:
            # Mid-stream: the clients are still sending, so requests are at every step when it dies.
            for pid in [server.process.pid, *_descendants(server.process.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            server.process.wait(timeout=30)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    finally:
        server.stop()

    restarted: Server = start_server(installation, workers=1)
    try:
        status, _, shown = restarted.call("GET", f"/v1/secrets/{secret_id}", token=admin)
        assert status == 200, shown
        current = shown["current_version"]
        assert current >= max(acknowledged)
        assert [v["version"] for v in shown["versions"]] == list(range(1, current + 1))
        seen: dict[int, Any] = {}
        for number in range(1, current + 1):
            status, _, body = restarted.call(
                "POST", f"/v1/secrets/{secret_id}/fetch", {"version": number}, admin
            )
            assert status == 200, (number, body)
            value = body["values"]["password"]
            assert value in sent
            seen[number] = value
        for number, value in acknowledged.items():
            assert seen[number] == value
        assert len(set(seen.values())) == len(seen)
        status, _, body = restarted.call("POST", f"/v1/secrets/{secret_id}/fetch", {}, admin)
        assert status == 200 and body["version"] == current and body["values"]["password"] == seen[current]
        # Secrets being created when the server died: each one listed opens, and each acknowledged one
        # is listed with the value sent.
        status, _, listed = restarted.call("GET", "/v1/secrets?folder=f13/new&limit=1000", token=admin)
        assert status == 200 and listed["next"] is None, listed
        ids = {item["id"] for item in listed["items"]}
        assert set(created) <= ids
        for listed_id in ids:
            status, _, body = restarted.call("POST", f"/v1/secrets/{listed_id}/fetch", {}, admin)
            assert status == 200 and body["version"] == 1, body
            assert created.get(listed_id, body["values"]["password"]) == body["values"]["password"]
    finally:
        restarted.stop()
