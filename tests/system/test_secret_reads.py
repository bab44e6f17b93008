"""Policy on secret reads, and approved reads, through a running server and its real token, on SQLite
and PostgreSQL (issue 12).

Rate limits per principal and per scope and time windows attached to a secret's folder judge fetches;
a denied fetch is audited with its reasons and carries no value. A read that policy sends to approvers
answers 202 with a pending request that stores the secret, a version and field names only; approvers see
metadata, never a value; once approved the requester (and nobody else) releases that version's value
exactly once, even after a rotation; rejected and cancelled requests answer stable codes; every step is
audited without a value; fetches are counted in their own metric family. Time windows are built around
the server's real clock (today's weekday), as the other policy tests through the server do.
"""

from __future__ import annotations

import http.client as httpclient
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.approvals.test_api_approvals import Desk, tx
from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, attach_policy, http, init_installation, start_server
from tests.system.test_secrets import World, canary

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def reads_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_secret_reads"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("reads")) / "data", database_url)
        server = start_server(installation)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def world(reads_server: Server) -> World:
    return World(reads_server, secrets.token_hex(4))


def not_today() -> list[str]:
    today = datetime.now(UTC).strftime("%a").lower()
    return [d for d in DAYS if d != today]


def audit(world: World) -> list[dict[str, Any]]:
    status, _, exported = world.server.call("GET", "/v1/audit/events?limit=10000", token=world.admin)
    assert status == 200
    # Each line carries its event as the hashed canonical text.
    return [json.loads(json.loads(line)["event"]) for line in exported.splitlines() if line]


def events(world: World, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in audit(world) if e.get("kind") == kind and all(e.get(k) == v for k, v in match.items())]


def approvers(world: World, group: str, count: int = 1) -> list[str]:
    tokens = []
    for i in range(count):
        status, made = world.call(
            "POST", "/v1/principals", {"name": f"{group}-a{i}", "role": "approver"}, token=world.admin
        )
        assert status == 201, made
        status, _ = world.call("PUT", f"/v1/groups/{group}/members/{made['principal']['id']}")
        assert status in (200, 201)
        tokens.append(made["credentials"]["access_token"])
    return tokens


def require_approval(world: World, group: str, quorum: int = 1, expires_in: int = 600) -> str:
    """Every request under the organisation (secret writes too: rules apply to every operation) needs
    ``quorum`` of ``group``, by a window that never holds today; returns the attachment's id."""
    attached = attach_policy(
        world.server,
        {
            "id": f"approve-reads-{world.org}",
            "rules": [
                {
                    "id": "reads-need-approval",
                    "kind": "time_window",
                    "effect": "require_approval",
                    "approval": {"quorum": quorum, "group": group, "expires_in_seconds": expires_in},
                    "windows": [{"days": not_today(), "start": "00:00", "end": "23:59"}],
                }
            ],
        },
        scope=world.org,
    )
    return str(attached["id"])


def detach(world: World, attachment_id: str) -> None:
    status, body = world.call("DELETE", f"/v1/policy-attachments/{attachment_id}")
    assert status == 200, body


# -- policy on reads -------------------------------------------------------------------------------


def test_time_window_denies_reads_outside_it_and_the_denial_is_audited_without_a_value(world: World) -> None:
    value = canary()
    secret_id = world.create("windowed", fields={"TOKEN": value})["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    assert world.fetch(secret_id)[0] == 200
    document = {
        "id": f"window-{world.org}",
        "rules": [
            {
                "id": "weekdays-only",
                "kind": "time_window",
                "effect": "deny",
                "windows": [{"days": not_today(), "start": "00:00", "end": "23:59"}],
            }
        ],
    }
    attach_policy(world.server, document, scope=f"{world.org}/payments")
    status, body = world.fetch(secret_id)
    assert (status, body["code"]) == (403, "policy_denied"), body
    assert "values" not in body and value not in json.dumps(body)
    assert [r["rule_id"] for r in body["decision"]["reasons"]] == ["weekdays-only"]
    (denied,) = events(world, "secret.fetch", secret_id=secret_id, outcome="denied")
    assert denied["error"]["code"] == "policy_denied"
    assert [r["rule_id"] for r in denied["decision"]["reasons"]] == ["weekdays-only"]
    assert "result" not in denied
    # A window that holds every day lets the read through again (the same rule id, a new version).
    document["rules"][0]["windows"] = [{"days": list(DAYS), "start": "00:00", "end": "23:59"}]
    attach_policy(world.server, document, scope=f"{world.org}/payments")
    status, body = world.fetch(secret_id)
    assert status == 200 and body["values"] == {"TOKEN": value}
    assert value not in json.dumps(audit(world))


def test_rate_limit_per_scope_is_shared_by_every_reader_of_the_folder(world: World) -> None:
    first = world.create("scope-a")["id"]
    second = world.create("scope-b")["id"]
    world.grant(world.service_id, scope=world.folder, operations=["read_value"])
    world.grant(world.other_id, scope=world.folder, operations=["read_value"])
    attach_policy(
        world.server,
        {
            "id": f"scope-reads-{world.org}",
            "rules": [
                {
                    "id": "folder-reads",
                    "kind": "rate_limit",
                    "effect": "deny",
                    "max_requests": 3,
                    "window_seconds": 3600,
                    "per": "scope",
                }
            ],
        },
        scope=world.folder,
    )
    outcomes = [
        world.fetch(first)[0],
        world.fetch(second, token=world.other)[0],
        world.fetch(second)[0],
    ]
    assert outcomes == [200, 200, 200]
    # The folder's budget is spent for everyone, whichever secret and principal.
    status, body = world.fetch(first, token=world.other)
    assert (status, body["code"]) == (429, "rate_limited"), body
    assert "values" not in body
    status, body = world.fetch(second)
    assert status == 429 and "values" not in body
    limited = events(world, "secret.fetch", outcome="denied", error={"code": "rate_limited", "status": 429})
    assert {e["secret_id"] for e in limited} == {first, second}
    assert all(e["decision"]["reasons"][0]["rule_id"] == "folder-reads" for e in limited)


def test_rate_limit_per_principal_counts_each_reader_apart(world: World) -> None:
    secret_id = world.create("per-principal")["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    world.grant(world.other_id, secret_id=secret_id, operations=["read_value"])
    attach_policy(
        world.server,
        {
            "id": f"principal-reads-{world.org}",
            "rules": [
                {
                    "id": "each-reader",
                    "kind": "rate_limit",
                    "effect": "deny",
                    "max_requests": 1,
                    "window_seconds": 3600,
                    "per": "principal",
                }
            ],
        },
        scope=world.org,
    )
    assert world.fetch(secret_id)[0] == 200
    assert world.fetch(secret_id, token=world.other)[0] == 200
    assert world.fetch(secret_id)[0] == 429
    assert world.fetch(secret_id, token=world.other)[0] == 429


# -- approved reads --------------------------------------------------------------------------------


def test_an_approved_read_is_released_once_to_its_requester_for_the_approved_version(world: World) -> None:
    first, second = canary(), canary()
    created = world.create("needs-approval", fields={"STRIPE_SECRET": first, "username": "acct"})
    secret_id = created["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    world.grant(world.other_id, secret_id=secret_id, operations=["read_value"])
    group = f"vault-{world.org}"
    (approver,) = approvers(world, group)
    attachment = require_approval(world, group)

    status, pending = world.fetch(secret_id)
    assert status == 202 and pending["state"] == "pending_approval", pending
    assert "values" not in pending and first not in json.dumps(pending)
    approval_id, digest = pending["approval"]["id"], pending["payload_digest"]

    # Approvers see metadata: the secret, the version and fields, who asks and for which workload.
    status, shown = world.call("GET", f"/v1/approvals/{approval_id}", token=approver)
    assert status == 200, shown
    assert shown["resource"] == {"type": "secret", "id": secret_id} and shown["secret_id"] == secret_id
    assert shown["operation"] == "read_value" and shown["released_by_requester"] is True
    view = shown["view"]
    assert (view["name"], view["folder"], view["owner"]) == ("needs-approval", world.folder, "group:payments")
    assert (view["version"], view["fields"], view["workload"]) == (
        1,
        ["STRIPE_SECRET", "username"],
        "billing-api",
    )
    assert view["requested_by"]["principal_id"] == world.service_id
    assert first not in json.dumps(shown)

    # Not yet: the requester gets a stable code, the result route says it still waits.
    status, body = world.fetch(secret_id, approval_id=approval_id)
    assert (status, body["code"]) == (409, "approval_pending"), body
    status, _, result = world.server.call("GET", f"/v1/approvals/{approval_id}/result", token=world.service)
    assert status == 202 and result["state"] == "pending"

    status, voted = world.call("POST", f"/v1/approvals/{approval_id}/approve", {"digest": digest}, approver)
    assert status == 200 and voted["state"] == "approved" and voted["result_available"] is True, voted

    # A rotation after the approval does not change what was approved (the policy, which judges
    # writes too, is detached for it: the release is judged again under whatever is in force then).
    detach(world, attachment)
    status, rotated = world.call(
        "POST", f"/v1/secrets/{secret_id}/versions", {"fields": {"STRIPE_SECRET": second, "username": "b"}}
    )
    assert status == 201 and rotated["current_version"] == 2, rotated
    assert first not in json.dumps(voted)
    status, _, result = world.server.call(
        "GET", f"/v1/approvals/{approval_id}/result?wait=5", token=world.service
    )
    assert (status, result["state"]) == (200, "approved") and "result" not in result

    # Another principal, even one that may read the secret, is told the request does not exist.
    status, body = world.fetch(secret_id, token=world.other, approval_id=approval_id)
    assert (status, body["code"]) == (404, "approval_not_found"), body
    # Naming another secret, or narrowing the approved read, is refused too.
    status, body = world.fetch(world.create("elsewhere")["id"], approval_id=approval_id)
    assert (status, body["code"]) == (404, "approval_not_found")
    status, body = world.fetch(secret_id, approval_id=approval_id, field="username")
    assert (status, body["code"]) == (400, "approval_fixes_the_read")

    status, released = world.fetch(secret_id, approval_id=approval_id)
    assert status == 200, released
    assert released["version"] == 1 and released["values"] == {"STRIPE_SECRET": first, "username": "acct"}
    status, body = world.fetch(secret_id, approval_id=approval_id)
    assert (status, body["code"]) == (409, "result_already_fetched") and "values" not in body

    status, shown = world.call("GET", f"/v1/approvals/{approval_id}", token=approver)
    assert shown["state"] == "released" and shown["result_available"] is False
    status, _, result = world.server.call("GET", f"/v1/approvals/{approval_id}/result", token=world.service)
    assert (status, result) == (200, {"id": approval_id, "state": "released"})

    trail = audit(world)
    mine = [
        e
        for e in trail
        if e.get("approval_id") == approval_id or (e.get("approval") or {}).get("id") == approval_id
    ]
    kinds = [e["kind"] for e in mine]
    for kind in ("approval.requested", "approval.vote", "approval.approved", "approval.released"):
        assert kind in kinds, kinds
    fetches = [e for e in mine if e["kind"] == "secret.fetch"]
    outcomes = [(e["outcome"], (e.get("error") or {}).get("code")) for e in fetches]
    assert ("allowed", None) in outcomes and ("denied", "result_already_fetched") in outcomes, outcomes
    assert ("denied", "approval_pending") in outcomes and ("denied", "approval_not_found") in outcomes
    (allowed,) = [e for e in fetches if e["outcome"] == "allowed"]
    assert allowed["result"] == {"version": 1, "field_names": ["STRIPE_SECRET", "username"]}
    assert allowed["actor"]["principal_id"] == world.service_id
    (pended,) = [e for e in trail if e.get("kind") == "secret.fetch" and e.get("approval_id") == approval_id]
    assert pended["outcome"] == "pending_approval"
    # No value in the audit log, the server's log or (SQLite) the database files: the pending request
    # and its release kept none.
    haystacks = {"audit": json.dumps(trail), "log": world.server.log_text()}
    for path in world.server.installation.data_dir.rglob("*"):
        if path.is_file() and not path.name.endswith(".log"):
            haystacks[str(path)] = path.read_bytes().decode("latin-1")
    for where, text in haystacks.items():
        for value in (first, second):
            assert value not in text, f"a value leaked into {where}"


def test_rejected_cancelled_and_deleted_reads_answer_stable_codes(
    world: World,
) -> None:
    secret_id = world.create("closed-reads")["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    group = f"vault-{world.org}"
    (approver,) = approvers(world, group)
    attachment = require_approval(world, group)

    _, rejected = world.fetch(secret_id)
    status, body = world.call(
        "POST",
        f"/v1/approvals/{rejected['approval']['id']}/reject",
        {"digest": rejected["payload_digest"]},
        approver,
    )
    assert status == 200 and body["state"] == "rejected"
    status, body = world.fetch(secret_id, approval_id=rejected["approval"]["id"])
    assert (status, body["code"]) == (409, "approval_rejected"), body

    _, cancelled = world.fetch(secret_id)
    status, body = world.call(
        "POST", f"/v1/approvals/{cancelled['approval']['id']}/cancel", token=world.service
    )
    assert status == 200 and body["state"] == "cancelled"
    status, body = world.fetch(secret_id, approval_id=cancelled["approval"]["id"])
    assert (status, body["code"]) == (409, "approval_cancelled"), body

    # A deleted secret takes its approved read with it.
    _, gone = world.fetch(secret_id)
    status, _ = world.call(
        "POST",
        f"/v1/approvals/{gone['approval']['id']}/approve",
        {"digest": gone["payload_digest"]},
        approver,
    )
    assert status == 200
    detach(world, attachment)
    assert world.call("DELETE", f"/v1/secrets/{secret_id}")[0] == 200
    status, body = world.fetch(secret_id, approval_id=gone["approval"]["id"])
    assert (status, body["code"]) == (404, "secret_not_found"), body


def test_an_approved_read_of_a_disabled_secret_is_released_only_once_it_is_enabled(world: World) -> None:
    value = canary()
    secret_id = world.create("paused-read", fields={"STRIPE_SECRET": value})["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    group = f"vault-{world.org}"
    (approver,) = approvers(world, group)
    attachment = require_approval(world, group)
    _, pending = world.fetch(secret_id)
    approval_id = pending["approval"]["id"]
    status, _ = world.call(
        "POST", f"/v1/approvals/{approval_id}/approve", {"digest": pending["payload_digest"]}, approver
    )
    assert status == 200
    detach(world, attachment)
    status, body = world.call("POST", f"/v1/secrets/{secret_id}/disable", {"reason": "paused"})
    assert status == 200 and body["state"] == "disabled", body
    status, body = world.fetch(secret_id, approval_id=approval_id)
    assert (status, body["code"]) == (409, "secret_disabled") and value not in json.dumps(body)
    # A new read is refused the same way.
    status, body = world.fetch(secret_id)
    assert (status, body["code"]) == (409, "secret_disabled")
    status, body = world.call("POST", f"/v1/secrets/{secret_id}/enable", {})
    assert status == 200 and body["state"] == "active", body
    status, released = world.fetch(secret_id, approval_id=approval_id)
    assert status == 200 and released["values"] == {"STRIPE_SECRET": value}, released


def test_racing_releases_hand_out_the_value_once(world: World) -> None:
    value = canary()
    secret_id = world.create("raced", fields={"TOKEN": value})["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    group = f"vault-{world.org}"
    (approver,) = approvers(world, group)
    require_approval(world, group, quorum=1)
    _, pending = world.fetch(secret_id)
    approval_id = pending["approval"]["id"]
    status, _ = world.call(
        "POST", f"/v1/approvals/{approval_id}/approve", {"digest": pending["payload_digest"]}, approver
    )
    assert status == 200
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: world.fetch(secret_id, approval_id=approval_id), range(8)))
    released = [body for status, body in answers if status == 200]
    assert len(released) == 1 and released[0]["values"] == {"TOKEN": value}, answers
    assert {(status, body["code"]) for status, body in answers if status != 200} == {
        (409, "result_already_fetched")
    }


def test_a_lost_quorum_sends_the_read_back_to_its_approvers(world: World) -> None:
    value = canary()
    secret_id = world.create("quorum", fields={"TOKEN": value})["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    group = f"vault-{world.org}"
    first, second = approvers(world, group, count=2)
    require_approval(world, group, quorum=1)
    _, pending = world.fetch(secret_id)
    approval_id, digest = pending["approval"]["id"], pending["payload_digest"]
    status, voted = world.call("POST", f"/v1/approvals/{approval_id}/approve", {"digest": digest}, first)
    assert status == 200 and voted["state"] == "approved"
    status, me = world.call("GET", "/v1/whoami", token=first)
    assert world.call("POST", f"/v1/principals/{me['principal_id']}/state", {"disabled": True})[0] == 200
    status, body = world.fetch(secret_id, approval_id=approval_id)
    assert (status, body["code"]) == (409, "approval_quorum_lost") and "values" not in body, body
    status, shown = world.call("GET", f"/v1/approvals/{approval_id}", token=second)
    assert shown["state"] == "pending", shown
    status, voted = world.call("POST", f"/v1/approvals/{approval_id}/approve", {"digest": digest}, second)
    assert status == 200 and voted["state"] == "approved", voted
    status, released = world.fetch(secret_id, approval_id=approval_id)
    assert status == 200 and released["values"] == {"TOKEN": value}, released
    assert events(world, "approval.reopened", approval_id=approval_id)


def test_an_expired_read_request_answers_approval_expired(world: World) -> None:
    secret_id = world.create("expiring")["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    group = f"vault-{world.org}"
    approvers(world, group)
    require_approval(world, group, expires_in=1)
    _, pending = world.fetch(secret_id)
    approval_id = pending["approval"]["id"]
    # The server's own long-poll waits for the expiry (the clock is the server's).
    status, _, result = world.server.call(
        "GET", f"/v1/approvals/{approval_id}/result?wait=10", token=world.service, timeout=30
    )
    assert (status, result["state"]) == (200, "expired"), result
    status, body = world.fetch(secret_id, approval_id=approval_id)
    assert (status, body["code"]) == (409, "approval_expired"), body


def test_a_signing_approval_is_not_released_through_a_secret(world: World) -> None:
    """The release takes the caller's own read approvals of that secret only: a pending signature's
    approval id, even its own requester's, is unknown there."""
    desk = Desk(world.server, f"desk-{world.org}")
    status, pending = desk.sign(tx())
    assert status == 202, pending
    secret_id = world.create("not-a-key")["id"]
    status, me = world.call("GET", "/v1/whoami", token=desk.requester)
    assert status == 200, me
    world.grant(me["principal_id"], secret_id=secret_id, operations=["read_value"])
    status, body = world.fetch(secret_id, token=desk.requester, approval_id=pending["approval"]["id"])
    assert (status, body["code"]) == (404, "approval_not_found"), body
    status, body = world.fetch(secret_id, approval_id="apr_0000000000000000000000000000")
    assert (status, body["code"]) == (404, "approval_not_found")


def console_session(server: Server, approver: str) -> str:
    """Sign in to the console with an approver token (login nonce and cookie first); the session cookie."""
    status, headers, page = http("GET", server.url + "/console/login")
    assert status == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    connection = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request(
        "POST",
        "/console/login",
        urllib.parse.urlencode({"csrf": match.group(1), "token": approver}),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": headers["Set-Cookie"].split(";")[0],
        },
    )
    response = connection.getresponse()
    assert response.status == 303
    cookies = [v for k, v in response.getheaders() if k == "Set-Cookie" and v.startswith("signer_console=")]
    connection.close()
    return cookies[0].split(";")[0]


def test_the_console_shows_a_read_request_by_its_metadata_never_its_value(world: World) -> None:
    value = canary()
    secret_id = world.create("console-read", fields={"DB_PASS": value})["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    group = f"vault-{world.org}"
    (approver,) = approvers(world, group)
    require_approval(world, group)
    _, pending = world.fetch(secret_id)
    approval_id = pending["approval"]["id"]
    session = console_session(world.server, approver)
    status, _, index = http("GET", world.server.url + "/console", headers={"Cookie": session})
    assert status == 200 and f"Release version 1 of secret {world.folder}/console-read (DB_PASS)" in index
    status, _, detail = http(
        "GET", world.server.url + f"/console/approvals/{approval_id}", headers={"Cookie": session}
    )
    assert status == 200
    for shown in ("console-read", world.folder, "DB_PASS", "group:payments", "billing-api", secret_id):
        assert shown in detail, shown
    assert value not in index and value not in detail


def test_fetches_have_their_own_metric_family(world: World) -> None:
    secret_id = world.create("counted")["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    assert world.fetch(secret_id)[0] == 200
    assert world.fetch("sec_0000000000000000")[0] == 404
    status, _, text = world.server.call("GET", "/metrics")
    assert status == 200
    lines = text if isinstance(text, str) else text.decode()
    assert 'signer_secret_fetches_total{outcome="allowed"}' in lines
    assert 'signer_secret_fetches_total{outcome="denied"}' in lines
    assert 'operation="read_value"' not in lines
