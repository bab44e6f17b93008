"""Key lifecycle transitions behind M-of-N approvals (U-06), through a running server on SQLite and
PostgreSQL.

A ``key_lifecycle`` rule attached to a key sends its compromise and destroy to two of three approvers:
the admin's call answers 202 with the pending request and changes nothing (the key still signs, checked
with eth-account); approvers read it decoded (key, label, action, reason, requester); the requester
cannot vote on it; once approved, the admin completes it by calling the same route with the approval's
id, which applies the approved transition once (the destroyed key's private key is gone from the token,
looked at in a process of its own) and writes a ``key.<action>`` event naming the approval and its
approvers. An approval for one key or one action completes no other; a rejected or expired one changes
nothing; a deny rule refuses; and ``signer audit verify`` passes on an export holding all of it.
"""

from __future__ import annotations

import html
import http.client as httpclient
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.dbfixtures import private_pg_database
from tests.service_harness import (
    TREE,
    Server,
    attach_policy,
    grant,
    http,
    init_installation,
    make_service,
    start_server,
)
from tests.system.support import cli_audit_verify, export_audit
from tests.system.token_objects import private_key_labels


class Board:
    """The running server, its admin, a relayer granted every key made here, and three approvers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.admin = server.installation.admin_token
        self.admin_id = server.installation.admin["principal"]["id"]
        relayer = make_service(server, f"relayer-{secrets.token_hex(3)}")
        self.relayer_id = relayer["principal"]["id"]
        self.relayer = relayer["credentials"]["access_token"]
        self.group = f"keepers-{secrets.token_hex(3)}"
        self.approvers: list[str] = []
        self.approver_ids: list[str] = []
        for i in range(3):
            status, person = self.call(
                "POST", "/v1/principals", {"name": f"{self.group}-a{i}", "role": "approver"}
            )
            assert status == 201, person
            status, _ = self.call("PUT", f"/v1/groups/{self.group}/members/{person['principal']['id']}")
            assert status in (200, 201)
            self.approvers.append(person["credentials"]["access_token"])
            self.approver_ids.append(person["principal"]["id"])

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, _, answer = self.server.call(method, path, body, token or self.admin)
        return status, answer

    def new_key(self, *, effect: str = "require_approval", expires_in: int = 3600) -> dict[str, Any]:
        label = f"guarded {secrets.token_hex(4)}"
        status, key = self.call("POST", "/v1/keys", {"curve": "secp256k1", "label": label})
        assert status == 201, key
        grant(self.server, self.relayer_id, key["id"], ["sign_message"])
        rule: dict[str, Any] = {
            "id": "irreversible",
            "kind": "key_lifecycle",
            "effect": effect,
            "actions": ["compromise", "destroy"],
        }
        if effect == "require_approval":
            rule["approval"] = {"quorum": 2, "group": self.group, "expires_in_seconds": expires_in}
        attach_policy(self.server, {"id": f"life-{key['id'][-12:]}", "rules": [rule]}, key_id=key["id"])
        return key

    def transition(self, key: dict[str, Any], action: str, **body: Any) -> tuple[int, Any]:
        if action in ("compromise", "destroy"):
            body.setdefault("confirm", key["label"])
        return self.call("POST", f"/v1/keys/{key['id']}/{action}", body)

    def state(self, key: dict[str, Any]) -> str:
        status, shown = self.call("GET", f"/v1/keys/{key['id']}")
        assert status == 200, shown
        return str(shown["state"])

    def vote(self, who: int, pending: dict[str, Any], decision: str = "approve") -> tuple[int, Any]:
        return self.call(
            "POST",
            f"/v1/approvals/{pending['approval']['id']}/{decision}",
            {"digest": pending["payload_digest"]},
            self.approvers[who],
        )

    def signs(self, key: dict[str, Any]) -> bool:
        status, signed = self.call(
            "POST", f"/v1/keys/{key['id']}/sign/message", {"message": "still mine"}, self.relayer
        )
        if status != 200:
            assert status == 409, signed
            return False
        recovered = Account.recover_message(encode_defunct(text="still mine"), signature=signed["signature"])
        assert recovered == key["address"]
        return True

    def key_events(self, key_id: str) -> list[dict[str, Any]]:
        events = [json.loads(json.loads(line)["event"]) for line in export_audit(self.server, self.admin)]
        return [e for e in events if e["kind"].startswith("key.") and e.get("key_id") == key_id]

    def token_labels(self) -> set[str]:
        return private_key_labels(self.server.installation.env, TREE)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def board(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_keyapprove"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("keyapprove")) / "data", database_url)
        server = start_server(installation)
        stack.callback(server.stop)
        yield Board(server)


def console_page(server: Server, token: str, path: str) -> str:
    """``path`` of the console as the holder of ``token`` sees it, after signing in through its form."""
    status, headers, page = http("GET", server.url + "/console/login")
    assert status == 200
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert nonce is not None
    connection = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = urllib.parse.urlencode({"csrf": nonce.group(1), "token": token})
    hdrs = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": headers["Set-Cookie"].split(";")[0],
    }
    connection.request("POST", "/console/login", body, hdrs)
    response = connection.getresponse()
    assert response.status == 303
    cookies = [v for k, v in response.getheaders() if k == "Set-Cookie" and v.startswith("signer_console=")]
    connection.close()
    status, _, page = http("GET", server.url + path, headers={"Cookie": cookies[0].split(";")[0]})
    assert status == 200, page
    return html.unescape(page)


def _pending(status: int, answer: Any) -> dict[str, Any]:
    assert status == 202 and answer["state"] == "pending_approval", answer
    approval = answer["approval"]
    assert approval["url"] == f"/v1/approvals/{approval['id']}"
    assert approval["result_url"] == f"/v1/approvals/{approval['id']}/result"
    return dict(answer)


def test_compromise_and_destroy_wait_for_a_quorum_and_name_their_approvers(board: Board) -> None:
    key, other = board.new_key(), board.new_key()

    pending = _pending(*board.transition(key, "compromise", reason="laptop stolen"))
    approval_id = pending["approval"]["id"]
    # Nothing changed: the key is active and signs.
    assert board.state(key) == "active" and board.signs(key)

    status, shown = board.call("GET", f"/v1/approvals/{approval_id}", token=board.approvers[0])
    assert status == 200, shown
    assert (shown["operation"], shown["key_id"], shown["state"]) == ("compromise_key", key["id"], "pending")
    view = shown["view"]
    assert (view["action"], view["reason"], view["key_label"]) == (
        "compromise",
        "laptop stolen",
        key["label"],
    )
    assert (view["key_state"], view["state_after"], view["irreversible"]) == ("active", "compromised", True)
    assert view["requested_by"]["principal_id"] == board.admin_id
    assert view["rules"] == ["irreversible"]
    # The console's page says the same in words, with the warning.
    page = console_page(board.server, board.approvers[0], f"/console/approvals/{approval_id}")
    assert f"Compromise key {key['label']} ({key['id']}, active to compromised)" in page
    assert "because: laptop stolen" in page and "Irreversible: the key can never sign again" in page

    # The requester never approves its own request; completing early is refused.
    status, refused = board.call(
        "POST", f"/v1/approvals/{approval_id}/approve", {"digest": pending["payload_digest"]}
    )
    assert (status, refused["code"]) == (403, "self_approval"), refused
    status, early = board.transition(key, "compromise", reason="laptop stolen", approval_id=approval_id)
    assert (status, early["code"]) == (409, "approval_pending"), early

    assert board.vote(0, pending)[1]["state"] == "pending"
    assert board.vote(1, pending)[1]["state"] == "approved"

    # Bound to this key, this action and this reason.
    status, wrong = board.transition(other, "compromise", reason="laptop stolen", approval_id=approval_id)
    assert (status, wrong["code"]) == (404, "approval_not_found"), wrong
    status, wrong = board.transition(key, "destroy", reason="laptop stolen", approval_id=approval_id)
    assert (status, wrong["code"]) == (404, "approval_not_found"), wrong
    status, wrong = board.transition(key, "compromise", reason="other story", approval_id=approval_id)
    assert (status, wrong["code"]) == (409, "approval_mismatch"), wrong
    assert board.state(key) == "active" and board.state(other) == "active"

    status, done = board.transition(key, "compromise", approval_id=approval_id)
    assert status == 200, done
    assert done["state"] == "compromised" and done["approval"]["id"] == approval_id
    assert not board.signs(key)
    status, again = board.transition(key, "compromise", approval_id=approval_id)
    assert (status, again["code"]) == (409, "result_already_fetched"), again

    # Destroy: the same flow, and the private key is gone from the token.
    pending = _pending(*board.transition(key, "destroy", reason="after the incident"))
    assert board.state(key) == "compromised" and key["label"] in board.token_labels()
    board.vote(2, pending)
    board.vote(0, pending)
    status, done = board.transition(key, "destroy", approval_id=pending["approval"]["id"])
    assert status == 200, done
    assert (done["state"], done["destroyed_in_token"]) == ("destroyed_compromised", True)
    assert key["label"] not in board.token_labels()

    events = board.key_events(key["id"])
    outcomes = [(e["kind"], e["outcome"]) for e in events]
    assert outcomes == [
        ("key.compromise", "pending_approval"),
        ("key.compromise", "allowed"),
        ("key.destroy", "pending_approval"),
        ("key.destroy", "allowed"),
    ]
    compromised, destroyed = events[1], events[3]
    assert compromised["approval"]["id"] == approval_id
    assert compromised["approval"]["approvers"] == {board.group: sorted(board.approver_ids[:2])}
    assert sorted(v["approver_id"] for v in compromised["approval"]["votes"]) == sorted(
        board.approver_ids[:2]
    )
    assert compromised["reason"] == "laptop stolen" and compromised["state"] == "compromised"
    assert destroyed["approval"]["approvers"] == {
        board.group: sorted([board.approver_ids[0], board.approver_ids[2]])
    }
    assert destroyed["approval"]["requester_id"] == board.admin_id


def test_rejected_or_expired_changes_nothing(board: Board) -> None:
    key = board.new_key()
    pending = _pending(*board.transition(key, "compromise", reason="maybe"))
    status, rejected = board.vote(0, pending, "reject")
    assert (status, rejected["state"]) == (200, "rejected"), rejected
    status, refused = board.transition(key, "compromise", approval_id=pending["approval"]["id"])
    assert (status, refused["code"]) == (409, "approval_rejected"), refused
    assert board.state(key) == "active" and board.signs(key)

    brief = board.new_key(expires_in=1)
    pending = _pending(*board.transition(brief, "compromise"))
    approval_id = pending["approval"]["id"]
    # The server's own long-poll waits for the expiry (the clock is the server's).
    status, _, result = board.server.call(
        "GET", f"/v1/approvals/{approval_id}/result?wait=10", token=board.admin, timeout=30
    )
    assert (status, result["state"]) == (200, "expired"), result
    status, refused = board.transition(brief, "compromise", approval_id=approval_id)
    assert (status, refused["code"]) == (409, "approval_expired"), refused
    assert board.state(brief) == "active" and board.signs(brief)


def test_transitions_no_rule_names_need_no_approval_and_a_deny_rule_refuses(board: Board) -> None:
    key = board.new_key()
    status, suspended = board.transition(key, "suspend", reason="maintenance")
    assert (status, suspended["state"]) == (200, "suspended"), suspended
    status, active = board.transition(key, "activate")
    assert (status, active["state"]) == (200, "active"), active

    denied = board.new_key(effect="deny")
    status, refused = board.transition(denied, "destroy")
    # The graph answers first: an active key cannot be destroyed whatever policy says.
    assert (status, refused["code"]) == (409, "invalid_key_transition"), refused
    status, refused = board.transition(denied, "compromise")
    assert (status, refused["code"]) == (403, "policy_denied"), refused
    assert refused["reasons"][0]["rule_id"] == "irreversible"
    assert board.state(denied) == "active" and board.signs(denied)
    # The refusal is audited (as every refused admin call is), naming the key and the code.
    events = [json.loads(json.loads(line)["event"]) for line in export_audit(board.server, board.admin)]
    refusals = [e for e in events if e["kind"] == "request.refused" and denied["id"] in json.dumps(e)]
    assert "policy_denied" in json.dumps(refusals[-1]), refusals


def test_an_export_with_approved_transitions_verifies(board: Board, tmp_path: Path) -> None:
    key = board.new_key()
    pending = _pending(*board.transition(key, "compromise"))
    board.vote(1, pending)
    board.vote(2, pending)
    status, done = board.transition(key, "compromise", approval_id=pending["approval"]["id"])
    assert status == 200, done
    lines = export_audit(board.server, board.admin)
    kinds = {json.loads(json.loads(line)["event"])["kind"] for line in lines}
    assert {"key.compromise", "approval.approved", "approval.released"} <= kinds
    code, report = cli_audit_verify(lines, tmp_path, board.server.installation.env)
    assert code == 0 and report["ok"], report


def _guard_grants(board: Board, key: dict[str, Any]) -> None:
    rule = {
        "id": "grants-need-two",
        "kind": "key_lifecycle",
        "effect": "require_approval",
        "actions": ["grant", "revoke_grant"],
        "approval": {"quorum": 2, "group": board.group, "expires_in_seconds": 3600},
    }
    attach_policy(board.server, {"id": f"grants-{key['id'][-12:]}", "rules": [rule]}, key_id=key["id"])


def test_a_grant_on_a_key_and_its_revocation_wait_for_approvers(board: Board) -> None:
    key, other = board.new_key(), board.new_key()
    _guard_grants(board, key)
    newcomer = make_service(board.server, f"newcomer-{secrets.token_hex(3)}")
    newcomer_id, newcomer_token = newcomer["principal"]["id"], newcomer["credentials"]["access_token"]
    asked = {"principal_id": newcomer_id, "key_id": key["id"], "operations": ["sign_message"]}

    pending = _pending(*board.call("POST", "/v1/grants", asked))
    approval_id = pending["approval"]["id"]
    # Nothing granted: the newcomer cannot see the key.
    assert board.call("GET", f"/v1/keys/{key['id']}", token=newcomer_token)[0] == 404
    status, shown = board.call("GET", f"/v1/approvals/{approval_id}", token=board.approvers[0])
    assert (shown["operation"], shown["view"]["grantee"]) == ("grant_key", f"principal:{newcomer_id}")
    assert shown["view"]["operations"] == ["sign_message"]
    page = console_page(board.server, board.approvers[0], f"/console/approvals/{approval_id}")
    assert f"Grant principal:{newcomer_id} sign_message on key {key['label']}" in page

    board.vote(0, pending)
    board.vote(1, pending)
    # Bound to this grant: more operations, or another key, are not what was approved.
    wider = {**asked, "operations": ["sign_message", "sign_transaction"], "approval_id": approval_id}
    status, refused = board.call("POST", "/v1/grants", wider)
    assert (status, refused["code"]) == (409, "approval_mismatch"), refused
    status, refused = board.call(
        "POST", "/v1/grants", {**asked, "key_id": other["id"], "approval_id": approval_id}
    )
    assert (status, refused["code"]) == (404, "approval_not_found"), refused
    status, made = board.call("POST", "/v1/grants", {**asked, "approval_id": approval_id})
    assert status == 201, made
    status, signed = board.call(
        "POST", f"/v1/keys/{key['id']}/sign/message", {"message": "granted"}, newcomer_token
    )
    assert status == 200, signed
    assert (
        Account.recover_message(encode_defunct(text="granted"), signature=signed["signature"])
        == key["address"]
    )

    pending = _pending(*board.call("DELETE", f"/v1/grants/{made['id']}"))
    assert (
        board.call("POST", f"/v1/keys/{key['id']}/sign/message", {"message": "x"}, newcomer_token)[0] == 200
    )
    board.vote(1, pending)
    board.vote(2, pending)
    status, revoked = board.call("DELETE", f"/v1/grants/{made['id']}?approval_id={pending['approval']['id']}")
    assert (status, revoked["revoked"]) == (200, True), revoked
    assert (
        board.call("POST", f"/v1/keys/{key['id']}/sign/message", {"message": "x"}, newcomer_token)[0] == 404
    )

    events = [json.loads(json.loads(line)["event"]) for line in export_audit(board.server, board.admin)]
    created = next(
        e for e in events if e["kind"] == "grant.create" and e.get("grant", {}).get("id") == made["id"]
    )
    assert created["approval"]["id"] == approval_id
    assert created["approval"]["approvers"] == {board.group: sorted(board.approver_ids[:2])}
    gone = next(
        e
        for e in events
        if e["kind"] == "grant.revoke" and e["outcome"] == "allowed" and e["grant_id"] == made["id"]
    )
    assert gone["approval"]["approvers"] == {board.group: sorted(board.approver_ids[1:])}


def test_a_scope_grant_cannot_bypass_a_guarded_key(board: Board) -> None:
    """A grant on a scope reaches every key below it: where granting one of them asks for approval
    (a rule on the key, or on a scope a key to come would fall under) or is denied, the scope-wide grant
    and its revocation are refused and grant nothing; elsewhere they pass as before."""
    vault = f"vault-{secrets.token_hex(3)}"
    status, key = board.call("POST", "/v1/keys", {"curve": "secp256k1", "label": "vaulted", "scope": vault})
    assert status == 201, key
    newcomer = make_service(board.server, f"scoped-{secrets.token_hex(3)}")
    newcomer_id, newcomer_token = newcomer["principal"]["id"], newcomer["credentials"]["access_token"]

    # Before any rule: a scope grant passes, and so does its revocation.
    status, made = board.call(
        "POST", "/v1/grants", {"principal_id": newcomer_id, "scope": vault, "operations": ["sign_message"]}
    )
    assert status == 201, made
    _guard_grants(board, key)
    for asked in (
        {"principal_id": newcomer_id, "scope": vault, "operations": ["sign_message"]},
        {"principal_id": newcomer_id, "scope": vault, "no_access": True},
    ):
        status, refused = board.call("POST", "/v1/grants", asked)
        assert (status, refused["code"]) == (409, "approval_required_per_key"), refused
        assert refused["reasons"][0]["rule_id"] == "grants-need-two"
        assert "approval" not in refused
    # A secrets-only scope grant does not reach keys: not judged by key rules.
    status, secrets_only = board.call(
        "POST", "/v1/grants", {"principal_id": newcomer_id, "scope": vault, "operations": ["read_value"]}
    )
    assert status == 201, secrets_only
    # Revoking the earlier scope grant would cut the guarded key's holder off: refused too.
    status, refused = board.call("DELETE", f"/v1/grants/{made['id']}")
    assert (status, refused["code"]) == (409, "approval_required_per_key"), refused
    status, signed = board.call(
        "POST", f"/v1/keys/{key['id']}/sign/message", {"message": "still granted"}, newcomer_token
    )
    assert status == 200, signed
    assert (
        Account.recover_message(encode_defunct(text="still granted"), signature=signed["signature"])
        == key["address"]
    )

    # A rule attached to a scope covers keys to come: a grant on a parent scope meets it, with no key yet.
    empty = f"{vault}/later"
    deny = {"id": "no-grants", "kind": "key_lifecycle", "effect": "deny", "actions": ["grant"]}
    attach_policy(board.server, {"id": f"deny-{secrets.token_hex(4)}", "rules": [deny]}, scope=empty)
    other = f"other-{secrets.token_hex(3)}"
    status, passed = board.call(
        "POST", "/v1/grants", {"principal_id": newcomer_id, "scope": other, "operations": ["sign_message"]}
    )
    assert status == 201, passed
    status, refused = board.call(
        "POST", "/v1/grants", {"principal_id": newcomer_id, "scope": empty, "operations": ["sign_message"]}
    )
    assert (status, refused["code"]) == (403, "policy_denied"), refused
    # The refusals are audited as refusals; nothing was granted.
    status, listed = board.call("GET", f"/v1/grants?principal_id={newcomer_id}")
    assert status == 200
    assert sorted(g["id"] for g in listed["items"] if not g["revoked"]) == sorted(
        [made["id"], secrets_only["id"], passed["id"]]
    )
