"""Policies attached to one resource by reference (issue 11), through a running server and its real
token, on SQLite and PostgreSQL.

A policy attached to a secret (``{"resource": {"type": "secret", "id"}}``) judges that secret's fetches
and no other secret's; one attached to a key by reference judges that key's signatures like the older
``key_id`` body, which old clients still send and still get back; the attachment's view names the
reference; bodies naming two places, a kind that does not exist or a missing resource are refused with
stable codes and without repeating what was sent; the CLI attaches with ``--resource TYPE:ID``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import private_pg_database
from tests.service_harness import (
    Server,
    attach_policy,
    grant,
    init_installation,
    make_key,
    put_policy,
    start_server,
)
from tests.system.test_secrets import World


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_attach")) if request.param == "postgres" else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("attach")) / "data", database_url)
        running = start_server(installation)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def world(server: Server) -> World:
    return World(server, secrets.token_hex(4))


def one_read(policy_id: str) -> dict[str, Any]:
    return {
        "id": policy_id,
        "rules": [
            {
                "id": "one-read",
                "kind": "rate_limit",
                "effect": "deny",
                "max_requests": 1,
                "window_seconds": 3600,
                "per": "principal",
            }
        ],
    }


def audit(world: World) -> list[dict[str, Any]]:
    status, exported = world.call("GET", "/v1/audit/events?limit=10000")
    assert status == 200
    return [json.loads(json.loads(line)["event"]) for line in exported.splitlines() if line]


def test_a_policy_attached_to_a_secret_judges_its_fetches_and_no_other_secrets(world: World) -> None:
    guarded = world.create("guarded")["id"]
    neighbour = world.create("neighbour")["id"]
    world.grant(world.service_id, scope=world.folder, operations=["read_value"])
    attached = attach_policy(
        world.server, one_read(f"guard-{world.org}"), resource={"type": "secret", "id": guarded}
    )
    assert attached["resource"] == {"type": "secret", "id": guarded}
    assert attached["scope"] is None and attached["key_id"] is None
    listed = world.call("GET", "/v1/policy-attachments")[1]["items"]
    assert {"type": "secret", "id": guarded} in [a["resource"] for a in listed]

    assert world.fetch(guarded)[0] == 200
    status, body = world.fetch(guarded)
    assert (status, body["code"]) == (429, "rate_limited"), body
    assert "values" not in body
    assert [p["attached_to"] for p in body["decision"]["policies"]] == [f"secret:{guarded}"]
    # The other secret of the same folder is not this policy's.
    assert [world.fetch(neighbour)[0] for _ in range(3)] == [200, 200, 200]
    (refused,) = [
        e
        for e in audit(world)
        if e.get("kind") == "secret.fetch" and e.get("secret_id") == guarded and e.get("outcome") == "denied"
    ]
    assert refused["decision"]["reasons"][0]["rule_id"] == "one-read"

    # Detached, it judges nothing any more.
    status, _ = world.call("DELETE", f"/v1/policy-attachments/{attached['id']}")
    assert status == 200
    assert world.fetch(guarded)[0] == 200


def test_a_key_by_reference_and_by_the_older_key_id_are_the_same_place(world: World) -> None:
    server = world.server
    key = make_key(server)
    grant(server, world.service_id, key["id"], ["sign_message"])
    document = one_read(f"key-ref-{world.org}")
    document["rules"][0]["id"] = "one-signature"
    by_reference = attach_policy(server, document, resource={"type": "key", "id": key["id"]})
    assert (
        by_reference["resource"] == {"type": "key", "id": key["id"]} and by_reference["key_id"] == key["id"]
    )

    def sign() -> tuple[int, Any]:
        return world.call("POST", f"/v1/keys/{key['id']}/sign/message", {"message": "hi"}, world.service)

    assert sign()[0] == 200
    status, body = sign()
    assert status == 429 and body["decision"]["policies"][0]["attached_to"] == f"key:{key['id']}", body

    # An old client's body: the same place, so it replaces the attachment made by reference.
    stored = put_policy(server, document)
    status, legacy = world.call(
        "POST",
        f"/v1/policies/{document['id']}/attachments",
        {"version": stored["version"], "key_id": key["id"]},
    )
    assert status == 201, legacy
    assert legacy["key_id"] == key["id"] and legacy["resource"] == {"type": "key", "id": key["id"]}
    in_force = [a["id"] for a in world.call("GET", "/v1/policy-attachments")[1]["items"]]
    assert legacy["id"] in in_force and by_reference["id"] not in in_force
    assert sign()[0] == 429


def test_attachment_bodies_are_refused_without_repeating_them(world: World) -> None:
    document = one_read(f"bad-{world.org}")
    stored = put_policy(world.server, document)
    path = f"/v1/policies/{document['id']}/attachments"
    secret_id = world.create("target")["id"]
    marker = "sec_" + secrets.token_hex(8)
    cases = [
        ({"resource": {"type": "secret", "id": secret_id}, "scope": world.org}, 400, "invalid_attachment"),
        ({"resource": {"type": "key", "id": marker}, "key_id": marker}, 400, "invalid_attachment"),
        ({"resource": {"type": "vault", "id": marker}}, 400, None),
        ({"resource": {"type": "secret"}}, 400, None),
        ({"resource": {"type": "secret", "id": marker, "extra": 1}}, 400, None),
        ({"resource": {"type": "secret", "id": marker}}, 404, "secret_not_found"),
        ({"resource": {"type": "key", "id": marker}}, 404, "key_not_found"),
        ({"key_id": marker}, 404, "key_not_found"),
        ({}, 400, "invalid_attachment"),
    ]
    for extra, expected_status, expected_code in cases:
        status, body = world.call("POST", path, {"version": stored["version"], **extra})
        assert status == expected_status, (extra, body)
        if expected_code is not None:
            assert body["code"] == expected_code, (extra, body)
        assert marker not in json.dumps(body) and "vault" not in json.dumps(body), body
    in_force = world.call("GET", "/v1/policy-attachments")[1]["items"]
    assert not [a for a in in_force if a["policy_id"] == document["id"]]
