"""KEK rotation through the running server (real SoftHSM token, SQLite file and PostgreSQL).

A scope's KEK is rotated twice while its secrets stay readable: every version opens afterwards with its
value (the fields keep binding the KEK id they were sealed under), new versions are sealed under the new
KEK, the rotation reports its progress and is audited without key material, a retired KEK is destroyed
only on an operator's word (and only when nothing uses it), and a process that held the old rows in its
caches still opens them after the old KEK is gone. The ``kill -9`` half is ``test_kek_rotation_crash``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, init_installation, make_service, start_server


@pytest.fixture(params=["sqlite", "postgres"])
def installation_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    with ExitStack() as stack:
        url = stack.enter_context(private_pg_database("signer_kek")) if request.param == "postgres" else None
        yield tmp_path / "data", url


def grant_all(server: Server, admin: str, principal_id: str, scope: str) -> None:
    status, _, body = server.call(
        "POST",
        "/v1/grants",
        {
            "principal_id": principal_id,
            "scope": scope,
            "operations": ["create", "update", "read_value", "read_metadata", "list"],
        },
        admin,
    )
    assert status == 201, body


def create(server: Server, admin: str, folder: str, values: dict[str, str]) -> str:
    status, _, body = server.call(
        "POST",
        "/v1/secrets",
        {"folder": folder, "name": "s-" + secrets.token_hex(6), "owner_group": "ops", "fields": values},
        admin,
    )
    assert status == 201, body
    return str(body["id"])


def fetch(server: Server, admin: str, secret_id: str, version: int | None = None) -> dict[str, Any]:
    status, _, body = server.call(
        "POST", f"/v1/secrets/{secret_id}/fetch", {} if version is None else {"version": version}, admin
    )
    assert status == 200, body
    return dict(body)


def wait_finished(server: Server, admin: str, scope: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = server.call("GET", f"/v1/secrets/keks/{scope}/rotation", token=admin)
        assert status == 200, body
        if body["state"] == "finished":
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.05)  # polling the reported state with a deadline, not synchronising on timing


def audit_events(server: Server, admin: str) -> list[dict[str, Any]]:
    status, _, text = server.call("GET", "/v1/audit/events?limit=10000", token=admin)
    assert status == 200
    return [json.loads(line) for line in text.splitlines() if line]


def test_rotate_twice_every_version_opens_and_the_retired_kek_is_destroyed_on_command(
    installation_url: tuple[Path, str | None],
) -> None:
    data_dir, database_url = installation_url
    installation = init_installation(data_dir, database_url)
    admin = installation.admin_token
    server = start_server(installation, env={"SIGNER_KEK_DESTROY_GRACE_SECONDS": "0"})
    try:
        grant_all(server, admin, installation.admin["principal"]["id"], "acme")
        grant_all(server, admin, installation.admin["principal"]["id"], "other")
        written: dict[str, list[dict[str, str]]] = {}
        for n in range(12):
            values = {"user": f"u{n}", "password": secrets.token_hex(8)}
            secret_id = create(server, admin, f"acme/app{n % 3}", values)
            written[secret_id] = [values]
        # A second version of some, and a secret of another scope (not rotated).
        for secret_id in list(written)[:4]:
            values = {"user": "again", "password": secrets.token_hex(8)}
            status, _, body = server.call(
                "POST", f"/v1/secrets/{secret_id}/versions", {"fields": values}, admin
            )
            assert status == 201, body
            written[secret_id].append(values)
        other = create(server, admin, "other/app", {"k": "v-other"})
        # Read everything once: this process now holds the rows and data keys in its caches.
        for secret_id, versions in written.items():
            assert fetch(server, admin, secret_id)["values"] == versions[-1]

        status, _, missing = server.call("GET", "/v1/secrets/keks/acme/rotation", token=admin)
        assert status == 404 and missing["code"] == "kek_rotation_not_found"
        status, _, started = server.call("POST", "/v1/secrets/keks/acme/rotate", None, admin)
        assert status == 202, started
        first = wait_finished(server, admin, "acme")
        assert first["id"] == started["id"]
        assert first["total"] == 16 and first["rewrapped"] == 16 and first["remaining"] == 0
        assert first["old_kek_id"] != first["new_kek_id"]
        assert first["retired"] == [first["old_kek_id"]] and first["destroyed"] == []

        # New versions after the switch are sealed under the new KEK: the next rotation rewraps them too.
        late_value = {"k": "late-" + secrets.token_hex(8)}
        late = create(server, admin, "acme/late", late_value)
        written[late] = [late_value]
        status, _, again = server.call("POST", "/v1/secrets/keks/acme/rotate", None, admin)
        assert status == 202, again
        second = wait_finished(server, admin, "acme")
        assert second["old_kek_id"] == first["new_kek_id"]
        assert second["total"] == 17 and second["rewrapped"] == 17

        # Destroying: not the current KEK, not an unknown one, and the retired ones of this scope only.
        status, _, body = server.call(
            "DELETE", f"/v1/secrets/keks/acme/retired/{second['new_kek_id']}", None, admin
        )
        assert status == 404 and body["code"] == "kek_not_found", body
        status, _, body = server.call(
            "DELETE", f"/v1/secrets/keks/other/retired/{second['old_kek_id']}", None, admin
        )
        assert status == 404, body
        status, _, body = server.call(
            "DELETE", f"/v1/secrets/keks/acme/retired/{second['old_kek_id']}", None, admin
        )
        assert status == 200 and body == {"scope": "acme", "kek_id": second["old_kek_id"], "destroyed": True}

        # The process still holds rows under the destroyed KEK in its caches: it reads them afresh.
        for secret_id, versions in written.items():
            for number, values in enumerate(versions, start=1):
                assert fetch(server, admin, secret_id, number)["values"] == values
        assert fetch(server, admin, other)["values"] == {"k": "v-other"}
        status, _, shown = server.call("GET", "/v1/secrets/keks/acme/rotation", token=admin)
        assert shown["destroyed"] == [second["old_kek_id"]]

        events = audit_events(server, admin)
        kinds = [e["kind"] for e in events if e["kind"].startswith(("secret.kek_rotation", "secret.kek."))]
        assert kinds.count("secret.kek_rotation.start") == 2
        assert kinds.count("secret.kek_rotation.switch") == 2
        assert kinds.count("secret.kek_rotation.finish") == 2
        assert kinds.count("secret.kek_rotation.progress") == 6  # 25, 50 and 75 % of each
        assert kinds.count("secret.kek.destroy") == 1
        text = json.dumps(events)
        for versions in written.values():
            for values in versions:
                assert values["password" if "password" in values else "k"] not in text
    finally:
        server.stop()

    # After a restart (fresh caches, the first retired KEK still on the token) everything opens.
    restarted = start_server(installation)
    try:
        for secret_id, versions in written.items():
            for number, values in enumerate(versions, start=1):
                assert fetch(restarted, admin, secret_id, number)["values"] == values
    finally:
        restarted.stop()


def test_rotation_refusals(installation_url: tuple[Path, str | None]) -> None:
    data_dir, database_url = installation_url
    installation = init_installation(data_dir, database_url)
    admin = installation.admin_token
    server = start_server(installation)
    try:
        grant_all(server, admin, installation.admin["principal"]["id"], "acme")
        create(server, admin, "acme/app", {"k": "v"})
        status, _, body = server.call("POST", "/v1/secrets/keks/Bad..Scope/rotate", None, admin)
        assert status == 400 and body["code"] == "invalid_name", body
        status, _, body = server.call("POST", "/v1/secrets/keks/acme/rotate", None, admin)
        assert status == 202
        finished = wait_finished(server, admin, "acme")
        # Within the grace period (the default: 10 minutes) a retired KEK is kept.
        status, _, body = server.call(
            "DELETE", f"/v1/secrets/keks/acme/retired/{finished['old_kek_id']}", None, admin
        )
        assert status == 409 and body["code"] == "kek_in_grace", body
        # A service principal may not rotate or read progress.
        token = make_service(server, "svc-" + secrets.token_hex(4))["credentials"]["access_token"]
        status, _, body = server.call("POST", "/v1/secrets/keks/acme/rotate", None, token)
        assert status == 403 and body["code"] == "role_required", body
        status, _, body = server.call("GET", "/v1/secrets/keks/acme/rotation", token=token)
        assert status == 403, body
    finally:
        server.stop()
