"""Secrets through a running server and its real token, on SQLite and PostgreSQL (issue 12's first slice).

A service principal fetches what it was granted and nothing else; a caller without any grant about a
secret gets the same 404 as for one that does not exist; a rotated value is what the next fetch returns;
bad input is refused with stable codes and writes nothing; a read that policy sends to approvers waits
for them (202); and a canary scan finds no value in the database files, the
server's log, the audit export or any error body (matrix A-14 for secrets).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.dbfixtures import asyncpg_dsn, private_pg_database, run_sync
from tests.service_harness import Server, attach_policy, init_installation, make_service, start_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def secrets_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_secrets"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("secrets")) / "data", database_url)
        server = start_server(installation, env={"SIGNER_SECRET_MAX_VALUE_BYTES": "1024"})
        try:
            yield server
        finally:
            server.stop()


def canary() -> str:
    return "canary-" + secrets.token_hex(12)


class World:
    """An admin who grants itself create/update/delete on an organisation, and a service principal."""

    def __init__(self, server: Server, tag: str) -> None:
        self.server = server
        self.admin = server.installation.admin_token
        self.org = f"org-{tag}"
        self.folder = f"{self.org}/payments/prod"
        admin_id = server.installation.admin["principal"]["id"]
        self.grant(
            admin_id, scope=self.org, operations=["create", "update", "delete", "read_metadata", "list"]
        )
        made = make_service(server, f"svc-{tag}")
        self.service_id = made["principal"]["id"]
        self.service = made["credentials"]["access_token"]
        other = make_service(server, f"other-{tag}")
        self.other_id = other["principal"]["id"]
        self.other = other["credentials"]["access_token"]

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, _, payload = self.server.call(method, path, body, token or self.admin)
        return status, payload

    def grant(
        self,
        principal_id: str,
        *,
        operations: list[str],
        scope: str | None = None,
        secret_id: str | None = None,
    ) -> dict[str, Any]:
        target = {"scope": scope} if scope is not None else {"secret_id": secret_id}
        status, body = self.call(
            "POST", "/v1/grants", {"principal_id": principal_id, "operations": operations, **target}
        )
        assert status == 201, body
        return body

    def create(self, name: str, **body: Any) -> dict[str, Any]:
        fields = body.pop("fields", None)
        request = {
            "folder": self.folder,
            "name": name,
            "owner_group": "payments",
            "category": "api_key",
            **body,
        }
        if "generate" not in request:
            request["fields"] = fields or {"STRIPE_SECRET": canary()}
        status, created = self.call("POST", "/v1/secrets", request)
        assert status == 201, created
        return created

    def fetch(self, secret_id: str, token: str | None = None, **body: Any) -> tuple[int, Any]:
        return self.call(
            "POST",
            f"/v1/secrets/{secret_id}/fetch",
            {"workload": "billing-api", **body},
            token or self.service,
        )


@pytest.fixture
def world(secrets_server: Server) -> World:
    return World(secrets_server, secrets.token_hex(4))


def test_create_grant_fetch_rotate(world: World) -> None:
    first, second = canary(), canary()
    created = world.create(
        "stripe-live", fields={"STRIPE_SECRET": first, "username": "acct"}, tags=["production"]
    )
    assert created["current_version"] == 1 and created["origin"] == "provided"
    assert first not in json.dumps(created)
    secret_id = created["id"]
    # Creating grants nobody anything: the service cannot even tell it exists.
    status, body = world.fetch(secret_id)
    assert (status, body["code"]) == (404, "secret_not_found")
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    status, body = world.fetch(secret_id)
    assert status == 200, body
    assert body["values"] == {"STRIPE_SECRET": first, "username": "acct"} and body["version"] == 1
    status, body = world.fetch(secret_id, field="STRIPE_SECRET")
    assert status == 200 and body["values"] == {"STRIPE_SECRET": first}
    # Rotation: the next fetch returns the new value; the old version stays readable by number.
    status, rotated = world.call(
        "POST", f"/v1/secrets/{secret_id}/versions", {"fields": {"STRIPE_SECRET": second}}
    )
    assert status == 201 and rotated["current_version"] == 2, rotated
    status, body = world.fetch(secret_id)
    assert status == 200 and body["values"] == {"STRIPE_SECRET": second} and body["version"] == 2
    status, body = world.fetch(secret_id, version=1, field="STRIPE_SECRET")
    assert status == 200 and body["values"] == {"STRIPE_SECRET": first}
    status, body = world.fetch(secret_id, version=7)
    assert (status, body["code"]) == (404, "secret_version_not_found")
    status, body = world.fetch(secret_id, field="nope")
    assert (status, body["code"]) == (404, "secret_field_not_found")
    # Show: metadata and who fetched last, never a value.
    status, shown = world.call("GET", f"/v1/secrets/{secret_id}")
    assert status == 200, shown
    assert shown["last_fetched_by"] == world.service_id
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert first not in json.dumps(shown) and second not in json.dumps(shown)
    # The grant names read_value only: metadata is refused with 403 (the service knows it exists).
    status, body = world.call("GET", f"/v1/secrets/{secret_id}", token=world.service)
    assert (status, body["code"]) == (403, "operation_not_granted")


def test_no_grant_answers_like_a_missing_secret(world: World) -> None:
    secret_id = world.create("mysql-primary")["id"]
    missing = world.fetch("sec_0000000000000000", token=world.other)
    ungranted = world.fetch(secret_id, token=world.other)
    assert missing[0] == ungranted[0] == 404
    assert missing[1]["code"] == ungranted[1]["code"] == "secret_not_found"
    assert missing[1]["detail"] == ungranted[1]["detail"]
    for method, path in (("GET", ""), ("DELETE", "")):
        status, body = world.call(method, f"/v1/secrets/{secret_id}{path}", token=world.other)
        assert (status, body["code"]) == (404, "secret_not_found")
    # Listing shows only what the caller may list.
    status, listed = world.call("GET", f"/v1/secrets?folder={world.org}", token=world.other)
    assert status == 200 and listed["items"] == []
    status, listed = world.call("GET", f"/v1/secrets?folder={world.org}")
    assert status == 200 and secret_id in [s["id"] for s in listed["items"]]


def test_folder_grant_covers_secrets_below_and_delete_removes(world: World) -> None:
    secret_id = world.create(
        "registry-pull", generate={"kind": "chars", "length": 40, "classes": ["lower", "digits"]}
    )["id"]
    world.grant(world.other_id, scope=f"{world.org}/payments", operations=["read_value", "list"])
    status, body = world.fetch(secret_id, token=world.other)
    assert status == 200, body
    (value,) = body["values"].values()
    assert len(value) == 40 and set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789")
    status, body = world.call("DELETE", f"/v1/secrets/{secret_id}")
    assert status == 200 and body == {"id": secret_id, "deleted": True}
    status, body = world.fetch(secret_id, token=world.other)
    assert (status, body["code"]) == (404, "secret_not_found")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"name": "a..b"}, "invalid_name"),
        ({"name": "bad\x00name"}, "invalid_name"),
        ({"name": "bad\x07"}, "invalid_name"),
        ({"name": "trailing "}, "invalid_name"),
        ({"name": "ok-name", "folder": "acme/../etc"}, "invalid_name"),
        ({"fields": {"password": ""}}, "empty_secret_value"),
        ({"fields": {"password": "x" * 1025}}, "secret_value_too_large"),
        ({"fields": {}}, "invalid_field"),
        ({"fields": {"bad name": "v"}}, "invalid_field_name"),
        ({"colour": "blue"}, "unknown_field"),
        (
            {"generate": {"kind": "chars", "classes": ["lower", "lower"]}, "fields": None},
            "invalid_generation_rule",
        ),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(world: World, change: dict[str, Any], code: str) -> None:
    body: dict[str, Any] = {
        "folder": world.folder,
        "name": "fine",
        "owner_group": "payments",
        "fields": {"password": canary()},
    }
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    status, problem = world.call("POST", "/v1/secrets", body)
    assert 400 <= status < 500 and problem["code"] == code, problem
    status, listed = world.call("GET", f"/v1/secrets?folder={world.org}")
    assert status == 200 and listed["items"] == []


def test_a_read_that_needs_approval_waits_for_approvers(world: World) -> None:
    secret_id = world.create("needs-approval")["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    today = datetime.now(UTC).strftime("%a").lower()
    other_days = [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today]
    attach_policy(
        world.server,
        {
            "id": f"approve-reads-{world.org}",
            "rules": [
                {
                    "id": "not-today",
                    "kind": "time_window",
                    "effect": "require_approval",
                    "approval": {"quorum": 1, "group": "ops", "expires_in_seconds": 600},
                    "windows": [{"days": other_days, "start": "00:00", "end": "23:59"}],
                }
            ],
        },
        scope=world.org,
    )
    status, body = world.fetch(secret_id)
    # Approved reads, released once to the requester: tests/system/test_secret_reads.py.
    assert (status, body["state"]) == (202, "pending_approval"), body
    assert "values" not in body


def test_rate_limit_applies_to_reads(world: World) -> None:
    secret_id = world.create("rate-limited")["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    attach_policy(
        world.server,
        {
            "id": f"reads-{world.org}",
            "rules": [
                {
                    "id": "reads",
                    "kind": "rate_limit",
                    "effect": "deny",
                    "max_requests": 2,
                    "window_seconds": 3600,
                    "per": "principal",
                }
            ],
        },
        scope=world.org,
    )
    assert [world.fetch(secret_id)[0] for _ in range(3)] == [200, 200, 429]


def test_canary_scan(secrets_server: Server, world: World) -> None:
    values = [canary() for _ in range(3)]
    created = world.create("canary-one", fields={"A": values[0], "B": values[1]})
    world.grant(world.service_id, secret_id=created["id"], operations=["read_value"])
    assert world.fetch(created["id"])[0] == 200
    world.call("POST", f"/v1/secrets/{created['id']}/versions", {"fields": {"A": values[2]}})
    status, fetched = world.fetch(created["id"], field="A")
    assert (status, fetched.get("values")) == (200, {"A": values[2]}), (status, fetched.get("code"))
    errors = [
        world.call(
            "POST",
            "/v1/secrets",
            {"folder": world.folder, "name": "x..y", "owner_group": "g", "fields": {"A": values[0]}},
        ),
        world.call(
            "POST",
            "/v1/secrets",
            {"folder": world.folder, "name": "canary-one", "owner_group": "g", "fields": {"A": values[1]}},
        ),
        world.call(
            "POST", f"/v1/secrets/{created['id']}/versions", {"fields": {"A": values[0]}, "extra": values[1]}
        ),
        world.fetch(created["id"], token=world.other),
    ]
    status, _, exported = secrets_server.call("GET", "/v1/audit/events?limit=10000", token=world.admin)
    assert status == 200
    kinds = {json.loads(line).get("kind") for line in exported.splitlines() if line}
    assert {"secret.create", "secret.fetch", "secret.rotate"} <= kinds, kinds
    haystacks = {
        "errors": json.dumps(errors),
        "audit": json.dumps(exported),
        "log": secrets_server.log_text(),
    }
    data_dir = secrets_server.installation.data_dir
    for path in data_dir.rglob("*"):
        if path.is_file() and not path.name.endswith(".log"):
            haystacks[str(path)] = path.read_bytes().decode("latin-1")
    for where, text in haystacks.items():
        for value in values:
            assert value not in text, f"a value leaked into {where}"


def test_moved_ciphertexts_and_wrapped_keys_do_not_open(secrets_server: Server, world: World) -> None:
    """A-04, A-05, A-06 through the server and the real token, on SQLite and PostgreSQL: a field's
    ciphertext moved to another field, another version or another secret, or a wrapped data key moved to
    another version, fails to open with 500 secret_integrity and no value; the untouched rows still open."""
    rows_sql = (
        "SELECT secret_id, version, wrapped_key, sealed_fields FROM secret_versions WHERE secret_id IN ({})"
    )
    write_sql = (
        "UPDATE secret_versions SET wrapped_key = {}, sealed_fields = {}"
        " WHERE secret_id = {} AND version = {}"
    )
    pg_url = secrets_server.installation.env.get("SIGNER_DATABASE_URL")
    database = secrets_server.installation.data_dir / "signer.db"

    def sql(statement: str, *params: Any) -> list[Any]:
        """Run one statement on the server's own database, SQLite file or PostgreSQL, behind its back."""
        if pg_url is None:
            with sqlite3.connect(database) as db:
                return db.execute(statement.format(*["?"] * len(params)), params).fetchall()

        async def on_pg() -> list[Any]:
            connection = await asyncpg.connect(asyncpg_dsn(pg_url), timeout=10)
            try:
                marks = [f"${i}" for i in range(1, len(params) + 1)]
                return [tuple(row) for row in await connection.fetch(statement.format(*marks), *params)]
            finally:
                await connection.close()

        return run_sync(on_pg)

    one, two = canary(), canary()
    first = world.create("tamper-one", fields={"A": one, "B": canary()})
    second = world.create("tamper-two", fields={"A": two})
    world.call("POST", f"/v1/secrets/{first['id']}/versions", {"fields": {"A": canary(), "B": canary()}})
    for secret in (first, second):
        world.grant(world.service_id, secret_id=secret["id"], operations=["read_value"])

    def rows() -> dict[tuple[str, int], tuple[bytes, dict[str, str]]]:
        found = sql(rows_sql.format("{}, {}"), first["id"], second["id"])
        return {(s, v): (bytes(w), json.loads(f)) for s, v, w, f in found}

    def write(secret_id: str, version: int, wrapped: bytes, fields: dict[str, str]) -> None:
        sealed = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        sql(write_sql, wrapped, sealed, secret_id, version)

    original = rows()
    a1, b1 = original[(first["id"], 1)], original[(first["id"], 2)]
    other = original[(second["id"], 1)]
    cases = [
        (first["id"], 1, a1[0], {**a1[1], "A": a1[1]["B"]}, {"field": "A", "version": 1}),  # field
        (first["id"], 2, b1[0], {**b1[1], "A": a1[1]["A"]}, {"field": "A"}),  # version
        (first["id"], 1, a1[0], {**a1[1], "A": other[1]["A"]}, {"field": "A", "version": 1}),  # secret
        (first["id"], 2, a1[0], b1[1], {"field": "A"}),  # wrapped key of version 1 in version 2
    ]
    try:
        for secret_id, version, wrapped, fields, ask in cases:
            write(secret_id, version, wrapped, fields)
            status, body = world.fetch(secret_id, **ask)
            assert (status, body["code"]) == (500, "secret_integrity"), (ask, body)
            assert one not in json.dumps(body) and two not in json.dumps(body)
            write(secret_id, version, *original[(secret_id, version)])
    finally:
        for (secret_id, version), (wrapped, fields) in original.items():
            write(secret_id, version, wrapped, fields)
    assert world.fetch(first["id"], version=1, field="A")[1]["values"] == {"A": one}
    assert world.fetch(second["id"])[1]["values"] == {"A": two}
