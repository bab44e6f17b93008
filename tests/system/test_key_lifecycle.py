"""The key lifecycle (U-06, NIST SP 800-57) through a running server, on SQLite and PostgreSQL.

A Hypothesis state machine drives one fresh key per example through random transitions (and wrong
confirmations) over the real routes and checks after every step: the key's state is the model's
(``signer.services.key_states``); a message signs, verified independently with eth-account, if and only
if the key is active, and is otherwise refused with the code naming its state; the audit log holds
exactly one ``key.<action>`` event per transition, with its time, actor, reason, previous and new
state; a destroyed key's private key is gone from the token (looked at in a process of its own with
python-pkcs11, not through the server). Around it: every sign path (transaction, message, typed data,
digest, EIP-7702 authorisation, JSON-RPC) refuses a key that is not active; a request approved after its
key left ``active`` never signs; refused transitions and confirmations write nothing.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from signer.services.key_states import (
    DESTROYED_STATES,
    NEEDS_CONFIRMATION,
    KeyAction,
    next_state,
    refusal_code,
)
from tests.dbfixtures import private_pg_database
from tests.service_harness import (
    TREE,
    Server,
    attach_policy,
    grant,
    init_installation,
    make_service,
    start_server,
    unlock_policy,
)
from tests.system.token_objects import private_key_labels

DELEGATE = "0x" + "42" * 20
OPERATIONS = ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"]
TX = {
    "type": 2,
    "chainId": 1,
    "nonce": 0,
    "to": "0x" + "11" * 20,
    "value": "1",
    "gas": 21000,
    "maxFeePerGas": "1000000000",
    "maxPriorityFeePerGas": "1",
}
TYPED = {
    "types": {
        "EIP712Domain": [{"name": "name", "type": "string"}],
        "Mail": [{"name": "body", "type": "string"}],
    },
    "primaryType": "Mail",
    "domain": {"name": "lifecycle"},
    "message": {"body": "hello"},
}


class Live:
    """The running server, its admin, and a relayer granted every key this test makes."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.admin = server.installation.admin_token
        relayer = make_service(server, f"lifecycle-{secrets.token_hex(3)}")
        self.relayer_id = relayer["principal"]["id"]
        self.relayer = relayer["credentials"]["access_token"]
        # Digests and this delegate are denied unless a policy unlocks them.
        attach_policy(server, unlock_policy(f"lifecycle-{secrets.token_hex(3)}", [DELEGATE]), scope="default")

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, _, answer = self.server.call(method, path, body, token or self.admin)
        return status, answer

    def new_key(self, *, inactive: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"curve": "secp256k1", "label": f"life {secrets.token_hex(5)}"}
        if inactive:
            body["inactive"] = True
        status, key = self.call("POST", "/v1/keys", body)
        assert status == 201, key
        grant(self.server, self.relayer_id, key["id"], OPERATIONS)
        return key

    def sign_message(self, key_id: str, text: str = "hello") -> tuple[int, Any]:
        return self.call("POST", f"/v1/keys/{key_id}/sign/message", {"message": text}, self.relayer)

    def head(self) -> int:
        _, headers, _ = self.server.call("GET", "/v1/audit/events?limit=1", token=self.admin)
        return int(headers["X-Audit-Head"])

    def key_events(self, key_id: str, after: int) -> list[dict[str, Any]]:
        """The ``key.*`` events about ``key_id`` after audit position ``after``, in order."""
        status, _, text = self.server.call(
            "GET", f"/v1/audit/events?after={after}&limit=10000", token=self.admin
        )
        assert status == 200
        lines = [] if not text else [json.dumps(text)] if isinstance(text, dict) else text.splitlines()
        events = [json.loads(json.loads(line)["event"]) for line in lines]
        return [e for e in events if e["kind"].startswith("key.") and e.get("key_id") == key_id]

    def token_labels(self) -> set[str]:
        """The labels of the private keys on the token, read by a process of its own."""
        return private_key_labels(self.server.installation.env, TREE)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_keylife"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("keylife")) / "data", database_url)
        server = start_server(installation)
        stack.callback(server.stop)
        yield Live(server)


def _transition(live: Live, key: dict[str, Any], action: str, **body: Any) -> tuple[int, Any]:
    return live.call("POST", f"/v1/keys/{key['id']}/{action}", body)


def test_random_lifecycles_sign_iff_active_and_audit_each_transition(live: Live) -> None:
    class KeyMachine(RuleBasedStateMachine):
        @initialize(inactive=st.booleans())
        def create(self, inactive: bool) -> None:
            self.after = live.head()
            self.key = live.new_key(inactive=inactive)
            self.state = self.key["state"]
            assert self.state == ("pre_activation" if inactive else "active")
            self.expected: list[tuple[str, str, str, str | None]] = []

        @rule(
            action=st.sampled_from(KeyAction), reason=st.none() | st.sampled_from(["rotation", "incident 7"])
        )
        def act(self, action: KeyAction, reason: str | None) -> None:
            body: dict[str, Any] = {} if reason is None else {"reason": reason}
            if action in NEEDS_CONFIRMATION:
                body["confirm"] = self.key["label"]
            status, answer = _transition(live, self.key, action.value, **body)
            target = next_state(self.state, action)
            if target is None:
                assert status == 409, answer
                assert answer["code"] == "invalid_key_transition" and answer["state"] == self.state
                return
            assert status == 200, answer
            assert answer["state"] == target.value
            self.expected.append(("key." + action.value, self.state, target.value, reason))
            event(f"reached {target.value}")
            if target in DESTROYED_STATES and self.state not in DESTROYED_STATES:
                assert answer["destroyed_in_token"] is True
                assert self.key["label"] not in live.token_labels()
            self.state = target.value

        @rule()
        def wrong_confirmation(self) -> None:
            status, answer = _transition(live, self.key, "destroy", confirm=self.key["label"] + " not")
            if next_state(self.state, KeyAction.DESTROY) is None:
                assert (status, answer["code"]) == (409, "invalid_key_transition")
            else:
                assert (status, answer["code"]) == (400, "confirmation_mismatch")

        @invariant()
        def signs_iff_active(self) -> None:
            status, shown = live.call("GET", f"/v1/keys/{self.key['id']}", token=live.relayer)
            assert status == 200, shown  # the public key stays readable in every state
            assert shown["state"] == self.state
            assert (shown["public_key"], shown["address"]) == (self.key["public_key"], self.key["address"])
            assert shown["can_sign"] is (self.state == "active")
            assert shown["compromised"] is ("compromised" in self.state)
            status, signed = live.sign_message(self.key["id"])
            if self.state == "active":
                assert status == 200, signed
                recovered = Account.recover_message(
                    encode_defunct(text="hello"), signature=signed["signature"]
                )
                assert recovered == self.key["address"]
            else:
                assert status == 409, signed
                assert (signed["code"], signed["state"]) == (refusal_code(self.state), self.state)

        @invariant()
        def one_event_per_transition(self) -> None:
            events = [e for e in live.key_events(self.key["id"], self.after) if e["kind"] != "key.create"]
            got = [(e["kind"], e["previous_state"], e["state"], e["reason"]) for e in events]
            assert got == self.expected
            for recorded in events:
                assert recorded["at"] and recorded["changed_at"] and recorded["actor"]["principal_id"]

    run_state_machine_as_test(
        KeyMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=8,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def _every_sign_path(live: Live, key: dict[str, Any]) -> list[tuple[int, Any]]:
    base = f"/v1/keys/{key['id']}/sign"
    answers = [
        live.call("POST", f"{base}/transaction", {"transaction": TX}, live.relayer),
        live.call("POST", f"{base}/message", {"message": "hi"}, live.relayer),
        live.call("POST", f"{base}/typed-data", {"typed_data": TYPED}, live.relayer),
        live.call("POST", f"{base}/digest", {"digest": "0x" + "ab" * 32}, live.relayer),
        live.call(
            "POST", f"{base}/authorization", {"chain_id": 1, "delegate": DELEGATE, "nonce": 0}, live.relayer
        ),
    ]
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "personal_sign", "params": ["0x6869", key["address"]]}
    status, answer = live.call("POST", "/v1/rpc", rpc, live.relayer)
    assert status == 200, answer
    answers.append((409, answer["error"]["data"]) if "error" in answer else (200, answer))
    return answers


def test_every_sign_path_refuses_a_key_that_is_not_active(live: Live) -> None:
    key = live.new_key()
    assert [status for status, _ in _every_sign_path(live, key)] == [200] * 6
    for action, state, body in (
        ("suspend", "suspended", {}),
        ("deactivate", "deactivated", {}),
        ("compromise", "compromised", {"confirm": key["label"], "compromised_at": "2026-11-30T08:00:00Z"}),
        ("destroy", "destroyed_compromised", {"confirm": key["label"]}),
    ):
        status, answer = _transition(live, key, action, **body)
        assert status == 200, answer
        for status, refused in _every_sign_path(live, key):
            assert (status, refused["code"], refused["state"]) == (409, refusal_code(state), state)
    status, shown = live.call("GET", f"/v1/keys/{key['id']}", token=live.relayer)
    assert status == 200 and shown["public_key"] == key["public_key"] and shown["address"] == key["address"]
    assert shown["compromised"] is True and shown["compromised_at"] == "2026-11-30T08:00:00Z"
    assert shown["attributes_source"] == "registry"  # the token no longer holds it
    # A service no grant reaches is told nothing about the state: the key is not found.
    stranger = make_service(live.server, f"stranger-{secrets.token_hex(3)}")["credentials"]["access_token"]
    status, answer = live.call("POST", f"/v1/keys/{key['id']}/sign/message", {"message": "hi"}, stranger)
    assert (status, answer["code"]) == (404, "key_not_found")


def test_refused_transitions_and_confirmations_write_nothing(live: Live) -> None:
    key = live.new_key(inactive=True)
    after = live.head()
    assert (live.sign_message(key["id"])[1])["code"] == "key_pre_activation"
    for action, body, status, code in (
        ("suspend", {}, 409, "invalid_key_transition"),
        ("deactivate", {}, 409, "invalid_key_transition"),
        ("destroy", {}, 400, "invalid_request"),
        ("destroy", {"confirm": "someone else"}, 400, "confirmation_mismatch"),
        ("compromise", {"confirm": key["label"], "compromised_at": "2999-01-01T00:00:00Z"}, 400, None),
        ("compromise", {"confirm": key["label"], "extra": 1}, 400, None),
        ("activate", {"reason": "\x1b[31m"}, 400, None),
    ):
        got, answer = _transition(live, key, action, **body)
        assert got == status, (action, answer)
        if code is not None and code != "invalid_request":
            assert answer["code"] == code
        assert "someone else" not in json.dumps(answer)  # input never echoed
    assert live.key_events(key["id"], after) == []
    assert live.call("GET", f"/v1/keys/{key['id']}")[1]["state"] == "pre_activation"
    # Only an admin moves a key.
    status, _ = live.call("POST", f"/v1/keys/{key['id']}/activate", {}, live.relayer)
    assert status == 403
    status, shown = _transition(live, key, "activate", reason="ceremony done")
    assert (status, shown["state"]) == (200, "active")
    [event] = live.key_events(key["id"], after)
    assert (event["kind"], event["previous_state"], event["state"], event["reason"]) == (
        "key.activate",
        "pre_activation",
        "active",
        "ceremony done",
    )


def test_old_disable_and_enable_are_suspend_and_activate(live: Live) -> None:
    key = live.new_key()
    after = live.head()
    for route, state in (
        ("disable", "suspended"),
        ("disable", "suspended"),
        ("enable", "active"),
        ("enable", "active"),
    ):
        status, answer = live.call("POST", f"/v1/keys/{key['id']}/{route}")
        assert (status, answer["state"]) == (200, state), answer
    events = live.key_events(key["id"], after)
    # A repeated call changes nothing and is not a transition.
    assert [(e["kind"], e["via"]) for e in events] == [("key.suspend", "disable"), ("key.activate", "enable")]
    assert _transition(live, key, "deactivate")[0] == 200
    status, answer = live.call("POST", f"/v1/keys/{key['id']}/enable")
    assert (status, answer["code"]) == (409, "invalid_key_transition")


def test_an_approval_for_a_key_that_left_active_never_signs(live: Live) -> None:
    tag = secrets.token_hex(3)
    key = live.new_key()
    status, approver = live.call("POST", "/v1/principals", {"name": f"life-ap-{tag}", "role": "approver"})
    assert status == 201, approver
    approver_token = approver["credentials"]["access_token"]
    assert live.call("PUT", f"/v1/groups/life{tag}/members/{approver['principal']['id']}")[0] == 200
    gate = {
        "id": f"life-gate-{tag}",
        "rules": [
            {
                "id": "any",
                "kind": "value_cap",
                "effect": "require_approval",
                "max_value": "0",
                "approval": {"quorum": 1, "group": f"life{tag}", "expires_in_seconds": 3600},
            },
        ],
    }
    attach_policy(live.server, gate, key_id=key["id"])
    status, pending = live.call(
        "POST", f"/v1/keys/{key['id']}/sign/transaction", {"transaction": TX}, live.relayer
    )
    assert status == 202, pending
    approval_id = pending["approval"]["id"]
    assert _transition(live, key, "suspend", reason="incident")[0] == 200
    status, voted = live.call(
        "POST", f"/v1/approvals/{approval_id}/approve", {"digest": pending["payload_digest"]}, approver_token
    )
    assert status == 200, voted
    status, shown = live.call("GET", f"/v1/approvals/{approval_id}")
    assert status == 200 and shown["state"] == "failed", shown
    assert "key_disabled" in json.dumps(shown)
    # Activated again, the failed request still never signs: it is closed.
    assert _transition(live, key, "activate")[0] == 200
    status, result = live.call("GET", f"/v1/approvals/{approval_id}/result", token=live.relayer)
    assert "signature" not in json.dumps(result)
    assert live.call("GET", f"/v1/approvals/{approval_id}")[1]["state"] == "failed"
