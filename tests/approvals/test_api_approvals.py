"""Approvals through the running server: a policy asks for 2 of treasury, the relayer gets 202, people
approve over HTTP, the relayer long-polls the result; every signature checked with eth-account."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from eth_account import Account

from tests.service_harness import Server, attach_policy, make_service

A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def tx(nonce: int = 0, value: int = 2 * 10**18) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 21000,
        "to": A,
        "value": value,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


class Desk:
    """A relayer with a key under a require-approval policy, and three approvers in a fresh group."""

    def __init__(self, server: Server, name: str, rules: list[dict[str, Any]] | None = None) -> None:
        self.server = server
        admin = server.installation.admin_token
        service = make_service(server, name)
        self.requester = service["credentials"]["access_token"]
        status, _, self.key = server.call("POST", "/v1/keys", {"curve": "secp256k1", "label": "k"}, admin)
        assert status == 201
        status, _, grant = server.call(
            "POST",
            "/v1/grants",
            {
                "principal_id": service["principal"]["id"],
                "key_id": self.key["id"],
                "operations": ["sign_transaction", "sign_typed_data"],
            },
            admin,
        )
        assert status == 201, grant
        self.group = f"treasury-{name[-12:]}".lower().strip("-")
        self.approvers: list[str] = []
        for i in range(3):
            status, _, person = server.call(
                "POST", "/v1/principals", {"name": f"{name[:50]}-a{i}", "role": "approver"}, admin
            )
            assert status == 201, person
            status, _, _ = server.call(
                "PUT", f"/v1/groups/{self.group}/members/{person['principal']['id']}", None, admin
            )
            assert status in (200, 201)
            self.approvers.append(person["credentials"]["access_token"])
        approval = {"quorum": 2, "group": self.group, "expires_in_seconds": 3600}
        rules = rules or [
            {
                "id": "big",
                "kind": "value_cap",
                "effect": "require_approval",
                "max_value": "1000000000000000000",
            }
        ]
        attach_policy(
            server,
            {"id": f"p-{name[:50]}", "rules": [{**rule, "approval": approval} for rule in rules]},
            key_id=self.key["id"],
        )

    def sign(self, fields: dict[str, Any]) -> tuple[int, Any]:
        status, _, body = self.server.call(
            "POST", f"/v1/keys/{self.key['id']}/sign/transaction", {"transaction": fields}, self.requester
        )
        return status, body

    def vote(self, who: int, approval_id: str, digest: str, decision: str = "approve") -> tuple[int, Any]:
        status, _, body = self.server.call(
            "POST", f"/v1/approvals/{approval_id}/{decision}", {"digest": digest}, self.approvers[who]
        )
        return status, body


@pytest.fixture
def desk(server: Server, unique_name: str) -> Desk:
    return Desk(server, unique_name)


def test_202_then_two_approvals_then_the_signature_once(desk: Desk, server: Server) -> None:
    status, pending = desk.sign(tx())
    assert status == 202 and pending["state"] == "pending_approval", pending
    approval_id, digest = pending["approval"]["id"], pending["payload_digest"]

    status, _, shown = server.call("GET", f"/v1/approvals/{approval_id}", token=desk.approvers[0])
    assert status == 200, shown
    view = shown["view"]
    assert (view["to"], view["value"], view["value_eth"], view["chainId"]) == (A, str(2 * 10**18), "2", "1")
    assert view["from"] == desk.key["address"] and view["rules"] == ["big"]
    status, _, listed = server.call("GET", "/v1/approvals?state=pending", token=desk.approvers[1])
    assert approval_id in [item["id"] for item in listed["items"]]

    # The relayer long-polls while the approvers act.
    outcome: dict[str, Any] = {}

    def wait() -> None:
        outcome["status"], _, outcome["body"] = server.call(
            "GET", f"/v1/approvals/{approval_id}/result?wait=30", token=desk.requester, timeout=60
        )

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert desk.vote(0, approval_id, "ab" * 32)[1]["code"] == "approval_mismatch"
    assert desk.vote(0, approval_id, digest)[1]["state"] == "pending"
    status, final = desk.vote(1, approval_id, digest)
    assert status == 200 and final["state"] == "signed", final
    waiter.join(60)
    assert outcome["status"] == 200, outcome
    result = outcome["body"]["result"]
    assert Account.recover_transaction(bytes.fromhex(result["raw_transaction"][2:])) == desk.key["address"]
    # fetched again (a replica that lost the answer): the same result, until it expires
    status, _, again = server.call("GET", f"/v1/approvals/{approval_id}/result", token=desk.requester)
    assert status == 200 and again["result"] == result and again["fetchable_until"], again
    status, late = desk.vote(2, approval_id, digest)
    assert status == 409 and late["code"] == "approval_closed"


def test_requester_cannot_approve_and_strangers_see_nothing(desk: Desk, server: Server) -> None:
    _, pending = desk.sign(tx())
    approval_id, digest = pending["approval"]["id"], pending["payload_digest"]
    status, _, body = server.call(
        "POST", f"/v1/approvals/{approval_id}/approve", {"digest": digest}, desk.requester
    )
    assert status == 403 and body["code"] == "self_approval", body
    stranger = make_service(server, f"stranger-{approval_id[-8:]}")["credentials"]["access_token"]
    for path in (f"/v1/approvals/{approval_id}", "/v1/approvals/apr_missing"):
        status, _, body = server.call("GET", path, token=stranger)
        assert status == 404 and body["code"] == "approval_not_found"
    status, _, body = server.call("POST", f"/v1/approvals/{approval_id}/cancel", None, desk.requester)
    assert status == 200 and body["state"] == "cancelled"
    status, _, body = server.call("GET", f"/v1/approvals/{approval_id}/result", token=desk.requester)
    assert (status, body["state"]) == (200, "cancelled")


def test_small_values_sign_at_once(desk: Desk) -> None:
    status, body = desk.sign(tx(value=10**15))
    assert status == 200 and "raw_transaction" in body


def test_pending_approvals_and_webhook_backlog_reach_the_metrics(desk: Desk, server: Server) -> None:
    """The database-wide gauges: a pending request shows in signer_approvals_pending (read every 5 s)."""
    import re
    import time

    status, pending = desk.sign(tx(nonce=5))
    assert status == 202, pending

    def gauge(name: str) -> float:
        status, _, text = server.call("GET", "/metrics")
        assert status == 200
        match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        assert match, name
        return float(match.group(1))

    deadline = time.monotonic() + 30
    while gauge("signer_approvals_pending") < 1:
        assert time.monotonic() < deadline, "the pending request never reached the gauge"
        time.sleep(0.5)  # polling a 5 s refresh with a hard deadline, not synchronising on timing
    assert gauge("signer_webhook_outbox_backlog") >= 0
