"""Refused admin calls leave one audit event each, on SQLite and PostgreSQL, through a running server.

Each refusal below (403 permission, 400 invalid input after authentication, 404, 409) must leave exactly
one ``request.refused`` event under its request id, naming the caller, the operation, the target
resource and the error's code and status, and carrying none of the refused input (every request puts a
unique marker in the values it sends). Unauthenticated requests leave none; nor do successes.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from signer.audit import canonical_json
from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, init_installation, make_key, make_service, start_server

_ids = itertools.count()


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with private_pg_database("signer_refusals") as url:
        installation = init_installation(tmp_path_factory.mktemp("signer-refusals-pg"), url)
        running = start_server(installation)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue("server" if request.param == "sqlite" else "pg_server")


def _marker() -> str:
    return f"mkr{secrets.token_hex(6)}"


def _head(server: Server) -> int:
    _, headers, _ = server.call("GET", "/v1/audit/events?limit=1", token=server.installation.admin_token)
    return int(headers["X-Audit-Head"])


def _events(server: Server, request_id: str, after: int) -> list[dict[str, Any]]:
    admin = server.installation.admin_token
    status, _, text = server.call("GET", f"/v1/audit/events?after={after}&limit=10000", token=admin)
    assert status == 200
    # The harness parses a one-line page as JSON; write it back as the canonical line it was.
    lines = (
        []
        if text is None
        else [canonical_json(text).decode()]
        if isinstance(text, dict)
        else text.splitlines()
    )
    found = []
    for line in lines:
        record = json.loads(line)
        if record["request_id"] == request_id:
            found.append({"record": line, **json.loads(record["event"])})
    return found


def _call(server: Server, method: str, path: str, body: Any, token: str) -> tuple[int, Any, str, int]:
    """Make the call under a fresh request id; also returns the audit head just before it."""
    after = _head(server)
    request_id = f"refusal-{next(_ids)}-{secrets.token_hex(4)}"
    status, _, answer = server.call(method, path, body, token, headers={"X-Request-Id": request_id})
    return status, answer, request_id, after


def _refusals(server: Server) -> tuple[list[tuple[Any, ...]], str]:
    """The refusals to make, and a service's token to make the 403s with."""
    name = f"refusals-{secrets.token_hex(4)}"
    service = make_service(server, name)
    key = make_key(server, "secp256k1", f"refusals {secrets.token_hex(3)}")
    m = [_marker() for _ in range(20)]
    cases = [
        # (label, who, method, path, body, status, code, action, resource type, resource id, marker)
        (
            "principal exists",
            "admin",
            "POST",
            "/v1/principals",
            {"name": name, "role": "service"},
            409,
            "principal_exists",
            "create_principal",
            "principal",
            None,
            name,
        ),
        (
            "principal bad role",
            "admin",
            "POST",
            "/v1/principals",
            {"name": m[0], "role": m[1]},
            400,
            "invalid_request",
            "create_principal",
            "principal",
            None,
            m[1],
        ),
        (
            "principal by a service",
            "service",
            "POST",
            "/v1/principals",
            {"name": m[2], "role": "admin"},
            403,
            "forbidden",
            "create_principal",
            "principal",
            None,
            m[2],
        ),
        (
            "principal state unknown",
            "admin",
            "POST",
            f"/v1/principals/prn_{m[3]}/state",
            {"disabled": True},
            404,
            "principal_not_found",
            "set_principal_state",
            "principal",
            f"prn_{m[3]}",
            "",
        ),
        (
            "tokens for unknown",
            "admin",
            "POST",
            f"/v1/principals/prn_{m[4]}/tokens",
            None,
            404,
            "principal_not_found",
            "issue_tokens",
            "principal",
            f"prn_{m[4]}",
            "",
        ),
        (
            "token unknown",
            "admin",
            "DELETE",
            f"/v1/tokens/tok_{m[5]}",
            None,
            404,
            "token_not_found",
            "revoke_token",
            "token",
            f"tok_{m[5]}",
            "",
        ),
        (
            "key by a service",
            "service",
            "POST",
            "/v1/keys",
            {"curve": "secp256k1", "label": m[6]},
            403,
            "forbidden",
            "create_key",
            "key",
            None,
            m[6],
        ),
        (
            "key bad curve",
            "admin",
            "POST",
            "/v1/keys",
            {"curve": m[7], "label": "x"},
            400,
            "invalid_request",
            "create_key",
            "key",
            None,
            m[7],
        ),
        (
            "disable unknown key",
            "admin",
            "POST",
            f"/v1/keys/key_{m[8]}/disable",
            None,
            404,
            "key_not_found",
            "disable_key",
            "key",
            f"key_{m[8]}",
            "",
        ),
        (
            "grant unknown key",
            "admin",
            "POST",
            "/v1/grants",
            {
                "principal_id": service["principal"]["id"],
                "key_id": f"key_{m[9]}",
                "operations": ["sign_message"],
            },
            404,
            "key_not_found",
            "create_grant",
            "grant",
            None,
            m[9],
        ),
        (
            "grant by a service",
            "service",
            "POST",
            "/v1/grants",
            {"principal_id": service["principal"]["id"], "key_id": key["id"], "operations": [m[10]]},
            403,
            "forbidden",
            "create_grant",
            "grant",
            None,
            m[10],
        ),
        (
            "revoke unknown grant",
            "admin",
            "DELETE",
            f"/v1/grants/grt_{m[11]}",
            None,
            404,
            "grant_not_found",
            "revoke_grant",
            "grant",
            f"grt_{m[11]}",
            "",
        ),
        (
            "policy invalid",
            "admin",
            "POST",
            "/v1/policies",
            {"id": "refusals", "version": 1, "rules": [{"id": "r", "kind": m[12]}]},
            400,
            "invalid_policy",
            "create_policy",
            "policy",
            None,
            m[12],
        ),
        (
            "attach unknown policy",
            "admin",
            "POST",
            f"/v1/policies/p{m[13]}/attachments",
            {"version": 1, "scope": "refusals", "mode": "live"},
            404,
            "policy_not_found",
            "attach_policy",
            "policy",
            f"p{m[13]}",
            "",
        ),
        (
            "detach unknown",
            "admin",
            "DELETE",
            f"/v1/policy-attachments/att_{m[14]}",
            None,
            404,
            "attachment_not_found",
            "detach_policy",
            "policy_attachment",
            f"att_{m[14]}",
            "",
        ),
        (
            "webhook bad url",
            "admin",
            "PUT",
            "/v1/groups/refusals/webhook",
            {"url": f"ftp://{m[15]}.example/x"},
            400,
            "invalid_request",
            "set_group_webhook",
            "webhook",
            None,
            m[15],
        ),
        (
            "webhook by a service",
            "service",
            "DELETE",
            "/v1/groups/refusals/webhook",
            None,
            403,
            "forbidden",
            "delete_group_webhook",
            "webhook",
            "refusals",
            "",
        ),
        (
            "member by a service",
            "service",
            "PUT",
            f"/v1/groups/refusals/members/{service['principal']['id']}",
            None,
            403,
            "forbidden",
            "add_member",
            "group_member",
            service["principal"]["id"],
            "",
        ),
    ]
    return cases, service["credentials"]["access_token"]


def test_every_refused_admin_call_leaves_one_event_without_its_input(live: Server) -> None:
    cases, service_token = _refusals(live)
    tokens = {"admin": live.installation.admin_token, "service": service_token}
    for label, who, method, path, body, status, code, action, rtype, rid, marker in cases:
        got, answer, request_id, after = _call(live, method, path, body, tokens[who])
        assert got == status, (label, answer)
        if code not in ("invalid_request", "forbidden"):
            assert answer["code"] == code, (label, answer)
        events = _events(live, request_id, after)
        assert len(events) == 1, (label, events)
        event = events[0]
        assert event["kind"] == "request.refused", label
        assert event["outcome"] == "refused", label
        assert event["action"] == action, label
        assert event["error"] == {"code": answer["code"], "status": status}, label
        assert event["resource"] == {"type": rtype, "id": rid}, (label, event["resource"])
        assert event["actor"]["role"] == ("admin" if who == "admin" else "service"), label
        assert set(event) - {"record"} == {
            "kind",
            "at",
            "request_id",
            "actor",
            "outcome",
            "resource",
            "error",
            "action",
        }
        if marker:
            assert marker not in event["record"], (label, event["record"])


def test_unauthenticated_calls_and_successes_leave_no_refusal(live: Server) -> None:
    status, _, request_id, after = _call(
        live, "POST", "/v1/keys", {"curve": "secp256k1", "label": "x"}, "nope"
    )
    assert status == 401
    assert _events(live, request_id, after) == []
    status, answer, request_id, after = _call(
        live, "POST", "/v1/keys", {"curve": "secp256k1", "label": "fine"}, live.installation.admin_token
    )
    assert status == 201, answer
    kinds = [event["kind"] for event in _events(live, request_id, after)]
    assert kinds == ["key.create"]


def test_admin_events_keep_their_keys_and_add_a_resource(live: Server) -> None:
    # The typed builder writes what the dict call sites wrote, plus ``resource`` (a strict superset).
    status, key, request_id, after = _call(
        live, "POST", "/v1/keys", {"curve": "secp256k1", "label": "shape"}, live.installation.admin_token
    )
    assert status == 201, key
    (event,) = _events(live, request_id, after)
    before = {"kind", "outcome", "request_id", "at", "actor", "key"}
    assert set(event) - {"record"} == before | {"resource"}
    assert event["resource"] == {"type": "key", "id": key["id"]}
